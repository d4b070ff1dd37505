"""Reading streaming responses in tests: event streams are asynchronous iterators."""

from asgiref.sync import async_to_sync


def streamed(response) -> bytes:
    """The whole body of a streaming response (an event stream's events, until it ends)."""
    if not response.is_async:
        return b"".join(response.streaming_content)

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()
