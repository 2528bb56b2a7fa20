"""The clerks' console in a real browser: Debian's chromium, headless, driven by Playwright.

A clerk enrols from the link `users add` prints (the TOTP secret read off
the page, as they would type it into their phone), logs in with password
and code, opens the queue and a request, decrypts a document in the page
with the court's key file (the SHA-256 the page computes equals the
manifest's), acknowledges, rejects with a reason and a note on one
document, sees the rejection notice in the outbox and at the relay, and
logs out.  Screenshots of each page are saved under the test's tmp_path.

Playwright drives the system browser (`/usr/bin/chromium`, which
`scripts/system-deps.sh test` installs); it never downloads its own.  One
browser serves the whole module; each test has its own context (cookies).
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.outbox.operator import list_outbox
from tests.fixtures.apiclient import api, base_url, file_request, new_key
from tests.fixtures.gatewayserver import COURT, GUARDIAN, MEASURE, World, mail_subject
from tests.fixtures.gpgkeys import CourtKey, export_secret
from tests.fixtures.teletransmission import Teletransmission

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (scripts/system-deps.sh test)",
    ),
    # The browser is the subject here, not the database: SQLite only, to stay fast.
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
SCREENSHOTS_TO = "GREFFE_CONSOLE_SCREENSHOTS"
"""If set, the screenshots are also copied to that folder (how docs/console-*.png were made)."""
PASSWORD = "une phrase de passe assez longue"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()  # the browser's processes end with it


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get(SCREENSHOTS_TO)
    if wanted:
        shutil.copy(path, Path(wanted) / path.name)


def _text_of(raw: bytes) -> str:
    """The decoded text parts of a mail (the notice is signed, its text transfer-encoded)."""
    parts = email.message_from_bytes(raw, policy=email.policy.default).walk()
    texts = [part.get_content() for part in parts if part.get_content_type() == "text/plain"]
    return "\n".join(str(text) for text in texts)


def _code(world: World, secret: str) -> str:
    return str(pyotp.TOTP(secret).at(world.gw.clock()))


def _enrol_and_login(
    world: World, page: Page, tmp_path: Path, address: str = "greffier@tj-lyon.example"
) -> None:
    """Enrol `address` (an admin if it starts with admin@, else a clerk of COURT) and log in."""
    role, courts = ("admin", []) if address.startswith("admin@") else ("greffe", [COURT])
    enrolment = world.gw.services.users.add(address, role, courts, "test")
    page.goto(f"{base_url(world)}/console/inscription/{enrolment.token}")
    expect(page.get_by_role("heading", name="Activer votre compte")).to_be_visible()
    expect(page.get_by_role("img", name="Code QR de votre second facteur")).to_be_visible()
    _shot(page, tmp_path, "enrolment")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.get_by_label("Mot de passe (12 caractères au moins)").fill(PASSWORD)
    page.get_by_label("Le même, à nouveau").fill(PASSWORD)
    page.get_by_label("Code affiché par l'application").fill(_code(world, secret))
    page.get_by_role("button", name="Activer le compte").click()
    expect(page.get_by_text("Votre compte est actif")).to_be_visible()
    world.gw.clock.advance(timedelta(seconds=30))  # the enrolment spent this step's code
    page.get_by_label("Adresse électronique").fill(address)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_label("Code à usage unique").fill(_code(world, secret))
    _shot(page, tmp_path, "login")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", name="File d'attente")).to_be_visible()


def _decrypt_first_document(world: World, page: Page, tmp_path: Path, expected: str) -> None:
    key_file = tmp_path / "cle-tribunal.asc"
    key_file.write_text(export_secret(world.court_key.gnupghome, world.court_key.fingerprint))
    page.locator("#keyfile").set_input_files(str(key_file))
    page.get_by_role("button", name="Charger la clé").click()
    expect(page.locator("#keystatus")).to_contain_text("Clé chargée")
    # The manifest opened too: the file names the sender gave replace "chiffré".
    expect(page.locator('[data-filename="1-1"]')).to_have_text("piece 0.pdf")
    page.locator("button.decrypt").first.click()
    computed = page.locator("#doc-1-1 .computed-sha256")
    expect(computed).to_have_text(expected)
    expect(page.locator("#doc-1-1")).to_contain_text("SHA-256 conforme au manifeste")
    expect(page.locator("#doc-1-1 iframe")).to_be_attached()


def test_clerk_enrols_reviews_rejects_and_logs_out_in_a_browser(
    world: World, page: Page, tmp_path: Path
) -> None:
    with api(world, new_key(world, "admin")) as admin:
        filed = file_request(world, admin, COURT, MEASURE, documents=2)
    _enrol_and_login(world, page, tmp_path)

    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=filed))
    expect(row).to_have_class("unread")
    expect(row).to_contain_text("compte de gestion")
    _shot(page, tmp_path, "queue")
    page.get_by_role("link", name=filed).click()
    expect(page.get_by_role("heading", name=f"Requête {filed}")).to_be_visible()
    detail = world.gw.services.records.request(filed, None)
    first = detail["submissions"][0]["documents"][0]
    expect(page.get_by_text(first["sha256"]).first).to_be_visible()
    expect(page.get_by_text("La passerelle ne peut rien déchiffrer")).to_be_visible()
    _decrypt_first_document(world, page, tmp_path, first["sha256"])
    _shot(page, tmp_path, "request")

    page.get_by_role("button", name="Enregistrer (avis d'enregistrement au tuteur)").click()
    expect(page.get_by_text("Requête enregistrée")).to_be_visible()
    assert world.gw.services.records.request(filed, None)["status"] == "received"

    before = len(world.sink.messages)
    page.get_by_label("Motif du rejet").fill("Le compte de gestion n'est pas signé.")
    page.get_by_label("Observation sur l'envoi 1, document 2").fill("Page 3 illisible.")
    page.get_by_role("button", name="Rejeter et envoyer l'avis").click()
    expect(page.get_by_text("Requête rejetée")).to_be_visible()
    expect(page.get_by_role("cell", name="avis de rejet")).to_be_visible()
    _shot(page, tmp_path, "rejected")
    rejected = world.gw.services.records.request(filed, None)
    assert rejected["status"] == "rejected"
    outbox = [row for row in list_outbox(world.gw.services.db) if row["reference"] == filed]
    assert "rejection" in {row["kind"] for row in outbox}
    # The rejection notice, with the note on document 2, reaches the relay (the
    # acknowledgement sent just before may arrive after `before`: match on the text).
    world.sink.wait_for_mail(
        lambda mail: filed in mail_subject(mail) and GUARDIAN in mail[1]
        and "Page 3 illisible." in _text_of(mail[2]),
        start=before, timeout=20,
    )  # fmt: skip

    # Back in the queue the request is read; then logging out ends the session.
    page.get_by_role("link", name="File d'attente").first.click()
    expect(page.get_by_role("row").filter(has=page.get_by_role("link", name=filed))).to_have_class(
        "read"
    )
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_text("Vous êtes déconnecté.")).to_be_visible()
    page.goto(f"{base_url(world)}/console/")
    expect(page.get_by_role("heading", name="Connexion à la console du greffe")).to_be_visible()


def test_console_page_runs_no_inline_script_and_refuses_a_forged_form(
    world: World, page: Page, tmp_path: Path
) -> None:
    """The CSP holds in a real browser: an injected inline script does not run."""
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    page.goto(f"{base_url(world)}/console/connexion")
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.pwned = 1'; document.body.append(s); }"
    )
    assert page.evaluate("() => window.pwned") is None
    assert any("Content Security Policy" in text for text in violations), violations
    # A form whose CSRF token was tampered with is refused, with a French page.
    page.locator('input[name="csrf"]').evaluate("(field) => { field.value = 'x'.repeat(43); }")
    page.get_by_label("Adresse électronique").fill("quelquun@tj-lyon.example")
    page.get_by_label("Mot de passe").fill("peu importe")
    page.get_by_label("Code à usage unique").fill("123456")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", name="Formulaire refusé")).to_be_visible()
    _shot(page, tmp_path, "csrf-refused")


def test_admin_retires_a_court_key_in_a_browser(
    world: World, page: Page, tmp_path: Path, second_court_key: CourtKey
) -> None:
    world.gw.services.admin.add_court_key(COURT, second_court_key.armored_public.encode(), "t")
    _enrol_and_login(world, page, tmp_path, "admin@greffe.example")
    page.get_by_role("link", name="Tribunaux").first.click()
    expect(page.get_by_role("heading", name="Tribunaux et leurs clés")).to_be_visible()
    first = world.court_key.fingerprint
    page.get_by_role("button", name=f"Retirer la clé {first}").click()
    expect(page.get_by_text(f"Clé {first} retirée du tribunal {COURT}")).to_be_visible()
    expect(page.get_by_role("button", name=f"Retirer la clé {first}")).to_have_count(0)
    row = page.get_by_role("row").filter(has=page.get_by_text(first))
    expect(row).to_contain_text("retirée")
    # The last key: refused unless the box is ticked.
    last = page.get_by_role("button", name=f"Retirer la clé {second_court_key.fingerprint}")
    last.click()
    expect(page.get_by_text("Clé non retirée")).to_be_visible()
    _shot(page, tmp_path, "admin-courts")
    page.get_by_label("retirer quand même (seule clé active)").check()
    page.get_by_role("button", name=f"Retirer la clé {second_court_key.fingerprint}").click()
    expect(page.get_by_text("Aucune clé active : ce tribunal ne peut rien")).to_be_visible()
    _shot(page, tmp_path, "admin-courts-no-key")


def test_admin_issues_a_teletransmission_credential_in_a_browser(
    tele: Teletransmission, page: Page, tmp_path: Path
) -> None:
    world = tele.world
    _enrol_and_login(world, page, tmp_path, "admin@greffe.example")
    page.get_by_role("link", name="Télétransmission").click()
    expect(page.get_by_role("heading", name="Télétransmission", exact=True)).to_be_visible()
    page.get_by_label("Nom du logiciel").fill("Mandat Plus")
    page.get_by_label("Éditeur").fill("Acme")
    page.get_by_role("button", name="Homologuer").click()
    expect(page.get_by_text("Logiciel « Mandat Plus » homologué.")).to_be_visible()
    page.get_by_label("Adresse inscrite du tuteur").fill(GUARDIAN)
    page.get_by_label("Logiciel", exact=True).select_option("Mandat Plus")
    page.get_by_role("button", name="Délivrer l'identifiant et l'afficher").click()
    expect(page.get_by_text("il ne sera plus affiché")).to_be_visible()
    secret = page.locator("#credential-secret").inner_text()
    _shot(page, tmp_path, "admin-teletransmission")
    # The secret read off the page logs in on the submission port.
    client = tele.login(secret)
    client.quit()
