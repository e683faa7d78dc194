"""One POST to a webhook URL, to the address we just checked.

httpx would resolve the host again by itself, and a DNS answer that changed in between (rebinding)
would defeat the check. So the request URL carries the checked IP, the Host header the real name, and
TLS uses the real name for SNI and certificate verification (httpcore's ``sni_hostname`` extension).
"""

from __future__ import annotations

import ipaddress

import httpx

from postwire.db.webhooks import Target, UrlPolicy, check_target


def _authority(target: Target) -> str:
    ip = ipaddress.ip_address(target.address.split("%")[0])
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{host}:{target.port}"


def _host_header(target: Target) -> str:
    default = 443 if target.scheme == "https" else 80
    name = f"[{target.host}]" if ":" in target.host else target.host
    return name if target.port == default else f"{name}:{target.port}"


async def pinned_request(client: httpx.AsyncClient, url: str, policy: UrlPolicy, body: bytes,
                         headers: dict[str, str]) -> httpx.Request:
    """Check ``url`` against ``policy`` now (UnsafeUrl if refused) and build a POST bound to the IP."""
    target = await check_target(url, policy)
    return client.build_request(
        "POST", f"{target.scheme}://{_authority(target)}{target.path}", content=body,
        headers={**headers, "Host": _host_header(target)},
        extensions={"sni_hostname": target.host},
    )


def http_client(timeout_s: float, max_connections: int) -> httpx.AsyncClient:
    """One client per endpoint: its connection pool is keyed by IP, so sharing one between endpoints
    could reuse a TLS session negotiated for another host name. No redirects (a 3xx is a failure, and a
    redirect would bypass the address check), no proxies from the environment."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False,
                             limits=httpx.Limits(max_connections=max_connections,
                                                 max_keepalive_connections=max_connections))
