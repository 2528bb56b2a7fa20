"""The administrators' teletransmission page against a real `serve`, then its effect on AUTH.

An administrator homologates a software, issues a credential from the
console (the secret is shown once, on that answer only), and a real SMTP
client logs in with that secret over STARTTLS and files; revoking the
credential, or withdrawing the software's homologation, in the console ends
what AUTH accepts.
"""

from __future__ import annotations

import html
import re
import smtplib

import pytest

from tests.fixtures.console import ConsoleClient, enrol
from tests.fixtures.gatewayserver import COURT, GUARDIAN
from tests.fixtures.teletransmission import SOFTWARE, Teletransmission

PAGE = "/console/admin/teletransmission"
_SECRET = re.compile(r'id="credential-secret">([^<]+)<')


def _refused(tele: Teletransmission, secret: str) -> int:
    client = tele.connect()
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(GUARDIAN, secret)
    finally:
        client.close()
    return refused.value.smtp_code


def test_admin_homologates_issues_files_and_revokes_from_the_console(
    tele: Teletransmission,
) -> None:
    world = tele.world
    admin = enrol(world, "admin@greffe.example", "admin")
    client = ConsoleClient(world)
    try:
        client.login(admin)
        page = client.get(PAGE)
        assert page.status_code == 200 and SOFTWARE in page.text
        assert 'href="/console/admin/teletransmission" aria-current="page"' in page.text

        form = {"name": "  Mandat  Plus ", "publisher": "Acme"}
        added = client.follow(client.post(f"{PAGE}/logiciels", form))
        assert "Logiciel « Mandat Plus » homologué." in added.text
        again = client.follow(client.post(f"{PAGE}/logiciels", {"name": "Mandat Plus"}))
        assert "le logiciel « Mandat Plus » est déjà homologué" in again.text

        issued = client.post(f"{PAGE}/identifiants",
                             {"address": GUARDIAN, "software": "Mandat Plus"})  # fmt: skip
        assert issued.status_code == 200 and "il ne sera plus affiché" in issued.text
        assert issued.headers["cache-control"] == "no-store"
        found = _SECRET.search(issued.text)
        assert found, issued.text[:2000]
        secret = html.unescape(found.group(1))
        assert secret not in client.get(PAGE).text  # shown once

        # The secret the page showed works on the submission port.
        code, reply = tele.send(tele.filing(), client=tele.login(secret))
        assert code == 250, reply
        rows = world.gw.services.credentials.list_credentials()
        new = next(row for row in rows if row["software"] == "Mandat Plus")
        assert new["last_used_at"] is not None

        form = {"address": GUARDIAN, "software": "Inconnu"}
        nowhere = client.follow(client.post(f"{PAGE}/identifiants", form))
        assert "Identifiant non délivré" in nowhere.text
        assert "« Inconnu » n'est pas un logiciel homologué" in html.unescape(nowhere.text)

        revoked = client.follow(client.post(f"{PAGE}/identifiants/{new['id']}/revoquer"))
        assert f"Identifiant {new['id']} révoqué" in html.unescape(revoked.text)
        assert _refused(tele, secret) == 535
        twice = client.follow(client.post(f"{PAGE}/identifiants/{new['id']}/revoquer"))
        assert f"aucun identifiant {new['id']} qui ne soit déjà révoqué" in twice.text

        withdrawn = client.follow(client.post(f"{PAGE}/logiciels/retirer", {"name": SOFTWARE}))
        assert f"Homologation de « {SOFTWARE} » retirée" in html.unescape(withdrawn.text)
        assert "identifiants révoqués avec elle : 1." in html.unescape(withdrawn.text)
        assert _refused(tele, tele.secret) == 535

        forged = client.post(f"{PAGE}/logiciels/retirer", {"name": "Mandat Plus"}, csrf=False)
        assert forged.status_code == 403
    finally:
        client.close()
    events = world.gw.services.records.audit_events(0, 500, None).items
    kinds = ("software.", "credential.")
    by_admin = [
        e["action"] for e in events
        if e["actor"] == f"user:{admin.user_id}" and str(e["action"]).startswith(kinds)
    ]  # fmt: skip
    assert by_admin == [
        "software.added", "credential.issued", "credential.revoked", "software.revoked",
    ]  # fmt: skip


def test_a_clerk_cannot_open_the_teletransmission_page(tele: Teletransmission) -> None:
    clerk = enrol(tele.world, "greffier@tj-lyon.example", "greffe", [COURT])
    client = ConsoleClient(tele.world)
    try:
        client.login(clerk)
        assert client.get(PAGE).status_code == 403
        client.get("/console/")  # a page with a form: the CSRF token the POST carries
        assert client.post(f"{PAGE}/logiciels", {"name": "X"}).status_code == 403
    finally:
        client.close()
