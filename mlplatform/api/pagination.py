"""Page-number pagination with a caller-chosen page size, capped by a setting."""

from rest_framework import pagination

from mlplatform.conf import platform_setting


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"

    def get_page_size(self, request):
        self.page_size = platform_setting("PAGE_SIZE")
        self.max_page_size = platform_setting("MAX_PAGE_SIZE")
        return super().get_page_size(request)
