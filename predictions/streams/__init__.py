"""The streaming faces: Server-Sent Events (``/predict/stream``, job events) and WebSockets."""
