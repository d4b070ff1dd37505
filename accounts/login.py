"""The password forms outside the API (the admin's, the browsable API's), rate limited.

Their POSTs count per client IP in the ``auth`` group, on the counter of ``/auth/token`` and
``/auth/login``: password guesses add up whichever form or endpoint they go to.
"""

import functools

from django.http import JsonResponse

from accounts.ratelimit import consume
from mlplatform.errors import error_body

GROUP = "auth"


def ratelimit_login_form(view):
    """Count each POST of the form's view; past the limit, 429 with ``Retry-After``.

    Showing the form (GET) is not counted. The answer is the API's error body, whose detail
    says which limit was reached and when to retry.
    """

    @functools.wraps(view)
    def limited_view(request, *args, **kwargs):
        if request.method == "POST":
            # No user and no key: the client's address counts, signed in or not.
            usage = consume(request, GROUP)
            if usage is not None and usage.limited:
                # RateLimitHeadersMiddleware adds Retry-After and X-RateLimit-* from the usage.
                return JsonResponse(error_body(usage.describe(), "rate_limited"), status=429)
        return view(request, *args, **kwargs)

    return limited_view
