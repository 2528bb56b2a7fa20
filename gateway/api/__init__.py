"""The HTTP adapter: FastAPI routes, API-key authentication, problem details, the server."""
