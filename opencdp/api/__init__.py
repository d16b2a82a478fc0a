"""HTTP APIs: the lean collection app, the admin API (FastAPI) and the server that hosts both."""
