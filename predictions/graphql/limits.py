"""Limits: on GraphQL documents (depth, aliases, tokens), and the REST API's rate limits.

Each limit is a strawberry extension built per operation, so a changed setting applies at once;
the validation rules are made once per limit value, so that strawberry's validation cache (keyed
by the rules) keeps hitting.
"""

from functools import cache

from graphql.validation import ASTValidationRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    max_aliases,
    query_depth_limiter,
)

from accounts.models import ApiKey
from mlplatform.conf import platform_setting


@cache
def _depth_rule(max_depth: int) -> type[ASTValidationRule]:
    return query_depth_limiter.create_validator(max_depth, None, None)


@cache
def _alias_rule(max_aliases_count: int) -> type[ASTValidationRule]:
    return max_aliases.create_validator(max_aliases_count)


class DepthLimit(AddValidationRules):
    """Refuse documents nested deeper than ``GRAPHQL_MAX_DEPTH`` (introspection aside)."""

    def __init__(self) -> None:
        super().__init__([_depth_rule(platform_setting("GRAPHQL_MAX_DEPTH"))])


class AliasLimit(AddValidationRules):
    """Refuse documents with more than ``GRAPHQL_MAX_ALIASES`` aliases (no 1,000 predictions
    in one request by aliasing ``predict``)."""

    def __init__(self) -> None:
        super().__init__([_alias_rule(platform_setting("GRAPHQL_MAX_ALIASES"))])


class TokenLimit(MaxTokensLimiter):
    """Stop parsing a document past ``GRAPHQL_MAX_TOKENS`` tokens."""

    def __init__(self) -> None:
        super().__init__(max_token_count=platform_setting("GRAPHQL_MAX_TOKENS"))


def rate_limit(request, group: str) -> None:
    """Count one operation in the REST API's rate-limit ``group`` for its caller (429 beyond).

    ``request`` is the DRF request. Each field counts as one call of its REST endpoint, so
    aliasing ``predict`` ten times in one document counts ten predictions.
    """
    from accounts.ratelimit import RateLimited, consume

    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    usage = consume(request._request, group, user=request.user, api_key=api_key)
    if usage is not None and usage.limited:
        raise RateLimited(usage)
