"""api-gateway: the HTTP API of Postwire (send mail as JSON or raw MIME, read message status).

Entry points: :func:`postwire.api_gateway.app.create_app` (ASGI app from ready dependencies) and
:func:`postwire.api_gateway.service.serve` (connect, serve until stopped, close); ``python -m
postwire.api_gateway`` runs the latter as a process.
"""
