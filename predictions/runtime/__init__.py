"""Model runtime: artifacts, predictors, input parsing and routing in pure Python and numpy."""
