"""The Open Inference Protocol (KServe "V2", as Triton and MLServer speak it) over REST, at /v2."""
