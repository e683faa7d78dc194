"""/v1/domains: an account's sending domains, their DKIM public keys and the DNS records to publish.

Every route is scoped to the caller's account: another account's domain answers 404, exactly like a
domain that does not exist, so names cannot be probed. Registering a name some account already has is a
409. Private keys stay in PostgreSQL; nothing here returns or logs them (DomainInfo has no such field).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import dns.asyncresolver
import structlog
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from postwire.api_gateway.auth import Account
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.domain_check import RecordCheck, RecordName, all_ok, resolver_for
from postwire.api_gateway.domain_check import check as check_records
from postwire.api_gateway.errors import ApiError, responses
from postwire.api_gateway.settings import ApiSettings
from postwire.db.domains import (
    DomainExists,
    DomainInfo,
    InvalidDomain,
    Purpose,
    add_domain,
    delete_domain,
    dns_records,
    get_domain,
    list_domains,
    mark_verified,
    normalise_name,
    set_tracking_host,
)
from postwire.db.models import Domain

log = structlog.get_logger(__name__)

DomainName = Annotated[str, Path(max_length=253, description="The domain (IDN or A-label, any case).")]


class DomainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=253, examples=["example.com"],
                      description="The domain mail is sent From; internationalised names are stored as "
                                  "their A-label (xn--…).")
    dkim_algorithm: Literal["rsa-sha256", "ed25519-sha256"] = Field(
        default="rsa-sha256", description="RSA-2048 is verified by every receiver; Ed25519 (RFC 8463) "
                                          "is smaller but not yet checked everywhere.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return normalise_name(v)
        except InvalidDomain as e:
            raise PydanticCustomError("invalid_domain", str(e)) from None


class DomainUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tracking_host: str | None = Field(
        max_length=253, examples=["track.example.com"],
        description="Host name of this domain's click/open tracking links (publish the CNAME shown in "
                    "dns_records; the API's ingress must serve it with a certificate). null: the default "
                    "tracking URL (docs/tracking.md).")

    @field_validator("tracking_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        try:
            return normalise_name(v)
        except InvalidDomain as e:
            raise PydanticCustomError("invalid_domain", str(e)) from None


class DnsRecordOut(BaseModel):
    type: str = Field(examples=["TXT"])
    name: str = Field(examples=["pw202611._domainkey.example.com"])
    value: str
    purpose: Purpose


class DomainOut(BaseModel):
    id: str
    name: str
    dkim_selector: str
    dkim_algorithm: str
    dkim_public_key: str = Field(description="The p= value of the DKIM record (base64).")
    created_at: datetime
    tracking_host: str | None = Field(default=None, description="Host of this domain's tracking links.")
    verified: bool = Field(description="Mail From this domain (or a subdomain) is accepted; until then it "
                                       "is refused unless the account allows unverified From domains "
                                       "(docs/domains.md). Verify with POST /v1/domains/{name}/verify.")
    verified_at: datetime | None = Field(default=None, description="When it was first verified.")
    dns_records: list[DnsRecordOut] = Field(description="Publish these before sending from the domain.")


class RecordCheckOut(BaseModel):
    record: RecordName
    purpose: RecordName = Field(description="The same as record (kept for earlier clients).")
    type: str
    name: str
    expected: str
    found: list[str]
    state: Literal["ok", "missing", "wrong", "unknown"]
    fix: str = Field(description="One line on what to change; empty when there is nothing to change (an "
                                 "`ok` record may carry a hint, e.g. DMARC p=none).")
    required: bool = Field(description="false for informational records (mx): not counted by `ok`.")
    details: dict[str, Any] = Field(description="What the verdict rests on (SPF lookup counts, DMARC "
                                                "policy and alignment, ...): docs/domains.md.")


class DomainCheckOut(BaseModel):
    domain: str
    ok: bool = Field(description="Every required record is ok.")
    records: list[RecordCheckOut]


class DomainVerifyOut(DomainCheckOut):
    verified: bool = Field(description="The domain is verified: its DKIM record was found as expected, now "
                                       "or before. Mail From it is accepted from now on (within "
                                       "POSTWIRE_FROM_POLICY_TTL_S).")
    verified_at: datetime | None


def _check_out(c: RecordCheck) -> RecordCheckOut:
    return RecordCheckOut(record=c.record, purpose=c.purpose, type=c.type, name=c.name,
                          expected=c.expected, found=c.found, state=c.state, fix=c.fix, required=c.required,
                          details=c.details)


def resolver(request: Request) -> dns.asyncresolver.Resolver:
    """One resolver per app (POSTWIRE_DNS_NAMESERVERS), made on first use."""
    found: dns.asyncresolver.Resolver | None = getattr(request.app.state, "dns_resolver", None)
    if found is None:
        settings = _deps(request).settings
        found = resolver_for(settings.dns_nameservers, settings.dns_timeout_s)
        request.app.state.dns_resolver = found
    return found


class DomainList(BaseModel):
    domains: list[DomainOut]


def _out(info: DomainInfo, settings: ApiSettings) -> DomainOut:
    records = [DnsRecordOut(type=r.type, name=r.name, value=r.value, purpose=r.purpose)
               for r in dns_records(info, settings)]
    return DomainOut(id=info.id, name=info.name, dkim_selector=info.dkim_selector,
                     dkim_algorithm=info.dkim_algorithm, dkim_public_key=info.dkim_public_key,
                     created_at=info.created_at, tracking_host=info.tracking_host,
                     verified=info.verified_at is not None, verified_at=info.verified_at, dns_records=records)


def _deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no domain {name!r} in this account")


async def verify_domain(request: Request, account_id: str,
                        name: str) -> tuple[Domain, list[RecordCheck], datetime | None] | None:
    """Look the domain's records up and mark it verified when its DKIM record holds its key: (the domain,
    the checks, when it was verified); None when the account has no such domain. The API's and the
    console's Verify."""
    deps = _deps(request)
    async with deps.sessions() as s:
        row = await get_domain(s, account_id, name)
    if row is None:
        return None
    found = await check_records(row, deps.settings, resolver(request))
    verified_at = row.verified_at
    if verified_at is None and any(c.record == "dkim" and c.state == "ok" for c in found):
        async with deps.sessions.begin() as s:
            marked = await mark_verified(s, account_id, row.name)
            verified_at = None if marked is None else marked.verified_at
        log.info("api.domain_verified", account_id=account_id, domain=row.name)
    return row, found, verified_at


def domains_router(settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1/domains", tags=["domains"])

    @router.post("", status_code=201, response_model=DomainOut, responses=responses(401, 409, 422, 503),
                 summary="Register a sending domain and generate its DKIM key",
                 description="Answers with the DNS records to publish (DKIM TXT, SPF include, return-path "
                             "CNAME). Mail whose From domain is this domain or a subdomain of it is "
                             "DKIM-signed with the new key.")
    async def create(payload: DomainCreate, request: Request, account_id: Account) -> DomainOut:
        deps = _deps(request)
        try:
            async with deps.sessions.begin() as s:
                row = await add_domain(s, account_id, payload.name, payload.dkim_algorithm,
                                       settings.dkim_default_selector or None)
                info = DomainInfo.of(row)
        except DomainExists as e:
            where = "in this account" if e.same_account else "by another account"
            raise ApiError(409, "domain_exists", f"{e.name} is already registered {where}") from None
        log.info("api.domain_added", account_id=account_id, domain=info.name, algorithm=info.dkim_algorithm,
                 selector=info.dkim_selector)
        return _out(info, settings)

    @router.get("", response_model=DomainList, responses=responses(401, 503),
                summary="The account's sending domains")
    async def list_(request: Request, account_id: Account) -> DomainList:
        async with _deps(request).sessions() as s:
            rows = await list_domains(s, account_id)
        return DomainList(domains=[_out(DomainInfo.of(r), settings) for r in rows])

    @router.get("/{name}", response_model=DomainOut, responses=responses(401, 404, 503),
                summary="One sending domain with its DNS records")
    async def get(request: Request, account_id: Account, name: DomainName) -> DomainOut:
        async with _deps(request).sessions() as s:
            row = await get_domain(s, account_id, name)
        if row is None:
            raise _not_found(name)
        return _out(DomainInfo.of(row), settings)

    @router.get("/{name}/check", response_model=DomainCheckOut, responses=responses(401, 404, 503),
                summary="The domain's health: its DNS records as published right now",
                description="Each record Postwire asks for (DKIM key, SPF include, return-path CNAME, "
                            "tracking CNAME) and those receivers judge the domain by (the SPF record with "
                            "its 10-lookup limit, the DMARC policy, alignment and rua, the MX), looked up "
                            "live: expected, found, `ok` / `missing` / `wrong` (or `unknown` when a lookup "
                            "failed), a one-line fix and the details. `ok` is true when every required "
                            "record is ok (the MX is informational).")
    async def check(request: Request, account_id: Account, name: DomainName) -> DomainCheckOut:
        async with _deps(request).sessions() as s:
            row = await get_domain(s, account_id, name)
        if row is None:
            raise _not_found(name)
        found = await check_records(row, settings, resolver(request))
        return DomainCheckOut(domain=row.name, ok=all_ok(found), records=[_check_out(c) for c in found])

    @router.post("/{name}/verify", response_model=DomainVerifyOut, responses=responses(401, 404, 503),
                 summary="Verify the domain: look its DKIM record up and, when it is published, accept "
                         "mail From it",
                 description="Runs the same live check as GET /v1/domains/{name}/check. When the DKIM "
                             "record holds the domain's key, the domain becomes verified (and stays so); "
                             "until then mail whose From is the domain or a subdomain is refused (422 / "
                             "SMTP 550 5.7.1), unless the account allows unverified From domains. The other "
                             "records are reported but not required: mail is aligned under DMARC by its "
                             "DKIM signature.")
    async def verify(request: Request, account_id: Account, name: DomainName) -> DomainVerifyOut:
        verified = await verify_domain(request, account_id, name)
        if verified is None:
            raise _not_found(name)
        row, found, verified_at = verified
        return DomainVerifyOut(domain=row.name, ok=all_ok(found), records=[_check_out(c) for c in found],
                               verified=verified_at is not None, verified_at=verified_at)

    @router.patch("/{name}", response_model=DomainOut, responses=responses(401, 404, 422, 503),
                  summary="Change a sending domain's settings (its tracking host)")
    async def update(payload: DomainUpdate, request: Request, account_id: Account,
                     name: DomainName) -> DomainOut:
        async with _deps(request).sessions.begin() as s:
            row = await set_tracking_host(s, account_id, name, payload.tracking_host)
            info = None if row is None else DomainInfo.of(row)
        if info is None:
            raise _not_found(name)
        log.info("api.domain_updated", account_id=account_id, domain=info.name,
                 tracking_host=info.tracking_host)
        return _out(info, settings)

    @router.delete("/{name}", status_code=204, responses=responses(401, 404, 503),
                   summary="Remove a sending domain and its key",
                   description="Mail From the domain goes out unsigned once the dispatchers' key cache "
                               "expires (POSTWIRE_DKIM_CACHE_TTL_S). Remove the DNS records afterwards.")
    async def remove(request: Request, account_id: Account, name: DomainName) -> Response:
        async with _deps(request).sessions.begin() as s:
            deleted = await delete_domain(s, account_id, name)
        if not deleted:
            raise _not_found(name)
        log.info("api.domain_deleted", account_id=account_id, domain=name)
        return Response(status_code=204)

    return router
