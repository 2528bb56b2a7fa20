"""The doctor's DNS checks: MX, the DKIM key record, SPF and DMARC for `gateway.domain`.

"This host", for the MX: an exchange is this gateway when its name is the
SMTP host name (`smtp.hostname`, else `gateway.domain`, as the SMTP greeting
says), or when one of its addresses is an address of that host name or the
address `smtp.listen` binds (unless it binds every address).
"""

from __future__ import annotations

import ipaddress
import re

from gateway.doctor.findings import (
    Deployment,
    Finding,
    ask,
    error,
    ok,
    smtp_hostname,
    warning,
)
from gateway.escaping import printable
from gateway.settings import Settings, parse_hostport


def _texts(deployment: Deployment, name: str) -> list[str]:
    records = ask(deployment.resolver.lookup_txt, name, "TXT") or []
    return [record.decode("utf-8", "replace").strip() for record in records]


def _tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC tag list ("v=DMARC1; p=reject") as a dict; names lower-cased."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def check_mx(deployment: Deployment) -> list[Finding]:
    """The domain's MX records all lead to this host, and this host's name has an address."""
    domain = deployment.settings.gateway.domain
    host = smtp_hostname(deployment.settings)
    advice = f"publish `{domain}. IN MX 10 {host}.`"
    records = ask(deployment.resolver.lookup_mx, domain, "MX")
    if not records:
        return [error("mx", f"no MX for {domain}: {advice}")]
    if any(not exchange for _, exchange in records):
        return [error("mx", f"{domain} publishes a null MX (it takes no mail): {advice} instead")]
    host_addresses = ask(deployment.resolver.lookup_addresses, host, "A/AAAA")
    ours = set(host_addresses) | _listen_addresses(deployment.settings)
    mine: list[str] = []
    others: list[str] = []
    for _, exchange in records:
        (mine if _is_this_host(deployment, exchange, host, ours) else others).append(exchange)
    if not mine:
        return [
            error("mx", f"MX of {domain} is {', '.join(others)}, not this host ({host}): {advice}")
        ]
    if host in mine and not host_addresses:
        return [
            error(
                "mx",
                f"{host}, the MX of {domain}, has no A or AAAA record: publish "
                f"`{host}. IN A <this host's public address>`",
            )
        ]
    if others:
        return [
            warning(
                "mx",
                f"MX of {domain} also lists {', '.join(others)}: mail sent there "
                "escapes the gateway's checks; remove those MX records",
            )
        ]
    return [ok("mx", f"MX of {domain} is this host ({', '.join(mine)})")]


def _listen_addresses(settings: Settings) -> set[str]:
    host, _ = parse_hostport(settings.smtp.listen)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return set()
    return set() if address.is_unspecified else {str(address)}


def _is_this_host(deployment: Deployment, exchange: str, host: str, ours: set[str]) -> bool:
    if exchange == host:
        return True
    return bool(set(ask(deployment.resolver.lookup_addresses, exchange, "A/AAAA")) & ours)


def check_dkim(deployment: Deployment) -> list[Finding]:
    """The DKIM TXT record at `greffe._domainkey.<domain>` carries the gateway's key."""
    settings = deployment.settings
    name = f"{settings.dkim_selector}._domainkey.{settings.gateway.domain}"
    try:
        ours = re.sub(r"\s", "", settings.dkim_pub_file.read_text("ascii"))
    except (OSError, UnicodeDecodeError):
        return [
            error(
                "dkim",
                f"the gateway's DKIM key {settings.dkim_pub_file} is unreadable: "
                "run `gateway init`",
            )
        ]
    publish = f'publish `{name}. IN TXT "v=DKIM1; k=rsa; p={ours}"`'
    keys = [
        re.sub(r"\s", "", tags["p"]) for tags in map(_tags, _texts(deployment, name)) if "p" in tags
    ]
    if not keys:
        return [error("dkim", f"no DKIM key at {name}: {publish}")]
    if all(key == ours for key in keys):
        return [ok("dkim", f"DKIM key at {name} is the gateway's (p=…{ours[-12:]})")]
    if ours in keys:
        return [
            warning(
                "dkim",
                f"{name} holds {len(keys)} DKIM keys, not all the gateway's: "
                "receivers may pick another; keep only the gateway's",
            )
        ]
    found = printable(keys[0][-12:]) if keys[0] else "(empty: revoked)"
    return [
        error(
            "dkim",
            f"the DKIM key at {name} (p=…{found}) is not the gateway's "
            f"(p=…{ours[-12:]}): {publish}",
        )
    ]


def check_spf(deployment: Deployment) -> list[Finding]:
    """One `v=spf1` record at the domain, ending with `-all` (or `~all`, noted)."""
    domain = deployment.settings.gateway.domain
    records = [text for text in _texts(deployment, domain) if re.match(r"v=spf1(\s|$)", text, re.I)]
    if not records:
        return [
            error(
                "spf",
                f'no SPF record at {domain}: publish `{domain}. IN TXT "v=spf1 mx '
                '-all"`, listing the addresses your relay sends from',
            )
        ]
    if len(records) > 1:
        return [
            error(
                "spf",
                f"{len(records)} SPF records at {domain}: receivers then fail SPF "
                "(RFC 7208 §4.5); merge them into one",
            )
        ]
    record = printable(records[0])
    terms = [term.lower() for term in records[0].split()[1:]]
    last = next((t for t in reversed(terms) if t.lstrip("+-~?") == "all"), None)
    if last is None:
        if any(term.startswith("redirect=") for term in terms):
            return [ok("spf", f"SPF record at {domain} delegates: `{record}`")]
        return [
            warning(
                "spf",
                f"SPF record at {domain} has no `all`: other hosts are neutral; "
                f"end it with -all (`{record}`)",
            )
        ]
    if last == "-all":
        return [ok("spf", f"SPF record at {domain} ends with -all: `{record}`")]
    if last == "~all":
        return [
            ok(
                "spf",
                f"SPF record at {domain} ends with ~all (other hosts soft-fail; "
                f"-all is stricter): `{record}`",
            )
        ]
    return [
        warning(
            "spf",
            f"SPF record at {domain} ends with {last}: any host may send as "
            f"{domain}; end it with -all (`{record}`)",
        )
    ]


def check_dmarc(deployment: Deployment) -> list[Finding]:
    """A `v=DMARC1` record at `_dmarc.<domain>`, or inherited from a parent domain."""
    domain = deployment.settings.gateway.domain
    labels = domain.split(".")
    # Walk up as DMARCbis does, stopping above the top-level label: the gateway
    # has no public suffix list, and a parent's record covers its subdomains.
    for start in range(max(len(labels) - 1, 1)):
        owner = ".".join(labels[start:])
        records = [
            text
            for text in _texts(deployment, f"_dmarc.{owner}")
            if _tags(text).get("v", "").upper() == "DMARC1"
        ]
        if records:
            break
    else:
        return [
            error(
                "dmarc",
                f"no DMARC record at _dmarc.{domain}: publish "
                f'`_dmarc.{domain}. IN TXT "v=DMARC1; p=reject"`',
            )
        ]
    where = f"_dmarc.{owner}" + ("" if owner == domain else f" (inherited by {domain})")
    if len(records) > 1:
        return [
            error(
                "dmarc",
                f"{len(records)} DMARC records at {where}: receivers then "
                "ignore DMARC (RFC 7489 §6.6.3); keep one",
            )
        ]
    tags = _tags(records[0])
    policy = tags.get("p") if owner == domain else tags.get("sp", tags.get("p"))
    if not policy:
        return [
            error(
                "dmarc",
                f'the DMARC record at {where} has no policy (p=): publish "v=DMARC1; p=reject"',
            )
        ]
    policy = printable(policy.lower(), 20)
    if policy == "none":
        return [
            warning(
                "dmarc",
                f"DMARC at {where} says p=none: mail forged in {domain}'s "
                "name is delivered anyway; use p=quarantine or p=reject",
            )
        ]
    return [ok("dmarc", f"DMARC at {where}: p={policy}")]
