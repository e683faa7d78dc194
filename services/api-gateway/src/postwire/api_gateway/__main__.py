"""``python -m postwire.api_gateway``: the api-gateway process (SIGTERM/SIGINT stop it gracefully)."""

from postwire.api_gateway.service import main
from postwire.core.lifecycle import run

if __name__ == "__main__":
    run(main)
