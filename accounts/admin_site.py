"""The admin site (``admin.site``): the platform's titles, and a rate-limited login form."""

from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.utils.decorators import method_decorator

from accounts.login import ratelimit_login_form


class PlatformAdminSite(admin.AdminSite):
    """Django's admin site, made the default one by ``mlplatform.apps.PlatformAdminConfig``."""

    site_header = "ML platform"
    site_title = "ML platform admin"
    index_title = "Control room"

    @method_decorator(ratelimit_login_form)
    @login_not_required
    def login(self, request, extra_context=None):
        """Django's login form, its POSTs counted per client IP in the ``auth`` rate limits."""
        return super().login(request, extra_context)
