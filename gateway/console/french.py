"""The console's French: labels for statuses, kinds and events, and domain errors put in French.

Domain errors carry English messages (the CLI's and the API's wording).
The console shows clerks French: the messages they meet in their work are
rewritten here by pattern, and any other one is shown as the CLI words it
after a French lead (`Refusé : …`), so nothing is ever hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gateway import errors

STATUS = {
    "open": "ouverte",
    "sealed": "close",
    "received": "enregistrée",
    "accepted": "acceptée",
    "rejected": "rejetée",
}
KIND = {"requete": "requête", "compte": "compte de gestion", "inventaire": "inventaire"}
CHANNEL = {"smtp": "courriel (SMTP)", "imap": "boîte IMAP", "teletransmission": "télétransmission"}
OUTBOX_KIND = {
    "code": "numéro de saisie",
    "receipt": "accusé de réception",
    "state": "état de la requête",
    "acknowledgement": "avis d'enregistrement",
    "rejection": "avis de rejet",
    "registration": "avis d'inscription",
    "registration_revoked": "avis de révocation",
    "check_report": "rapport de contrôle",
    "credential_expiry": "expiration d'identifiant",
    "postmaster": "postmaster",
}
OUTBOX_STATUS = {"pending": "en attente", "sent": "envoyé", "failed": "abandonné"}
ROLE = {"admin": "administrateur", "greffe": "greffe"}
USER_STATE = {
    "active": "actif",
    "disabled": "désactivé",
    "enrolment pending": "inscription en attente",
}
REGISTRATION_STATUS = {"active": "active", "revoked": "révoquée"}
SOFTWARE_STATUS = {"homologated": "homologué", "revoked": "homologation retirée"}
CREDENTIAL_STATUS = {"active": "actif", "expired": "expiré", "revoked": "révoqué"}
ACTION = {
    "code.issued": "numéro de saisie délivré",
    "code.failed": "numéro de saisie refusé",
    "message.accepted": "envoi reçu",
    "message.refused": "envoi refusé",
    "request.sealed": "requête close",
    "request.acknowledged": "enregistrement (avis envoyé)",
    "request.accepted": "acceptation",
    "request.rejected": "rejet (avis envoyé)",
    "request.assigned": "attribution",
    "outbox.failed": "courrier abandonné",
    "outbox.retried": "courrier relancé",
    "retention.purged": "purge (conservation)",
}

_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (
        re.compile(r"request (\S+) is (\w+); (\w+) applies to a request that is (.+)"),
        lambda m: (
            f"la requête {m[1]} est {STATUS.get(m[2], m[2])} : cette action ne s'applique "
            "qu'à une requête " + " ou ".join(STATUS.get(s, s) for s in m[4].split(" or "))
        ),
    ),
    (
        re.compile(r"request (\S+) has no submission: nothing to \w+"),
        lambda m: f"la requête {m[1]} n'a reçu aucun envoi : rien à traiter",
    ),
    (re.compile(r"unknown (?:request|submission) .*"), lambda m: "requête introuvable"),
    (re.compile(r"unknown court (\S+)"), lambda m: f"tribunal inconnu : {m[1]}"),
    (re.compile(r"duplicate of line (\d+)"), lambda m: f"doublon de la ligne {m[1]}"),
    (
        re.compile(r"key (\S+) is already registered for court (\S+)"),
        lambda m: f"la clé {m[1]} est déjà enregistrée pour le tribunal {m[2]}",
    ),
    (
        re.compile(r"key (\S+) was retired from court (\S+): .*"),
        lambda m: (
            f"la clé {m[1]} a été retirée du tribunal {m[2]} : une clé retirée n'est pas "
            "reprise (le greffe en crée une nouvelle)"
        ),
    ),
    (
        re.compile(r"court (\S+) has no key (\S+)"),
        lambda m: f"le tribunal {m[1]} n'a pas de clé {m[2]}",
    ),
    (
        re.compile(r"key (\S+) of court (\S+) is already retired"),
        lambda m: f"la clé {m[1]} du tribunal {m[2]} est déjà retirée",
    ),
    (
        re.compile(r"key (\S+) is court (\S+)'s only active key: .*"),
        lambda m: (
            f"c'est la seule clé active du tribunal {m[2]} : ajoutez d'abord celle qui lui "
            "succède, ou cochez « retirer quand même » (ses envois seront refusés jusqu'à "
            "l'ajout d'une clé)"
        ),
    ),
    (
        re.compile(r"not a key fingerprint: .*"),
        lambda m: "empreinte de clé invalide (40 ou 64 chiffres hexadécimaux)",
    ),
    (
        re.compile(r"(\S+) is already registered for (\S+) (.+)"),
        lambda m: f"{m[1]} est déjà inscrite pour {m[2]} {m[3]}",
    ),
    (
        re.compile(r"no active registration of (\S+) for (\S+) (.+)"),
        lambda m: f"aucune inscription active de {m[1]} pour {m[2]} {m[3]}",
    ),
    (
        re.compile(r"registration (\d+) is already revoked"),
        lambda m: f"l'inscription {m[1]} est déjà révoquée",
    ),
    (re.compile(r"invalid address '(.*)': .*"), lambda m: f"adresse invalide : {m[1]}"),
    (
        re.compile(r"invalid measure number '(.*)': .*"),
        lambda m: (
            f"numéro de mesure invalide : {m[1]} (1 à 40 caractères A-Z a-z 0-9 / . _ - et espace)"
        ),
    ),
    (re.compile(r"invalid court code '(.*)': .*"), lambda m: f"code de tribunal invalide : {m[1]}"),
    (
        re.compile(r"expected (\d+) fields, found (\d+)"),
        lambda m: f"{m[1]} champs attendus, {m[2]} trouvés",
    ),
    (
        re.compile(r"line 1: header must name court,measure,address \(missing (.+)\)"),
        lambda m: f"ligne 1 : l'en-tête doit nommer court,measure,address (manque : {m[1]})",
    ),
    (
        re.compile(r"file holds no registration"),
        lambda m: "le fichier ne contient aucune inscription",
    ),
    (re.compile(r"file is not UTF-8 text"), lambda m: "le fichier n'est pas du texte UTF-8"),
    (re.compile(r"reason must not be empty"), lambda m: "le motif ne doit pas être vide"),
    (
        re.compile(r"reason is longer than (\d+) characters"),
        lambda m: f"le motif dépasse {m[1]} caractères",
    ),
    (
        re.compile(r"note (\S+) is longer than (\d+) characters"),
        lambda m: f"l'observation sur le document {m[1]} dépasse {m[2]} caractères",
    ),
    (re.compile(r"court (\S+) already exists"), lambda m: f"le tribunal {m[1]} existe déjà"),
    (
        re.compile(r"court name must be 1-200 characters"),
        lambda m: "le nom du tribunal doit compter de 1 à 200 caractères",
    ),
    (re.compile(r"a user (\S+) already exists"), lambda m: f"un compte {m[1]} existe déjà"),
    (
        re.compile(r"user (\d+) is already disabled"),
        lambda m: f"le compte {m[1]} est déjà désactivé",
    ),
    (re.compile(r"user (\d+) is disabled"), lambda m: f"le compte {m[1]} est désactivé"),
    (
        re.compile(r"a greffe (?:user|key) needs at least one court.*"),
        lambda m: "un compte du greffe doit avoir au moins un tribunal",
    ),
    (
        re.compile(r"an admin (?:user|key) sees every court: give no court"),
        lambda m: "un administrateur voit tous les tribunaux : n'indiquez aucun tribunal",
    ),
    (
        re.compile(r"API key (\d+) is already revoked"),
        lambda m: f"la clé d'API {m[1]} est déjà révoquée",
    ),
    (
        re.compile(r"outbox (\d+) was already sent: nothing to retry"),
        lambda m: f"le courrier {m[1]} est déjà parti : rien à relancer",
    ),
    (
        re.compile(r"outbox (\d+) gave up after .*"),
        lambda m: f"le courrier {m[1]} a été abandonné et son contenu effacé : il ne peut repartir",
    ),
    (
        re.compile(r"enrolment link unknown, used or expired"),
        lambda m: (
            "ce lien d'inscription est inconnu, déjà utilisé ou expiré ; demandez-en un "
            "nouveau à un administrateur"
        ),
    ),
    (re.compile(r"the two passwords differ"), lambda m: "les deux mots de passe diffèrent"),
    (
        re.compile(r"the password must have at least (\d+) characters"),
        lambda m: f"le mot de passe doit compter au moins {m[1]} caractères",
    ),
    (
        re.compile(r"the password must have at most (\d+) characters"),
        lambda m: f"le mot de passe doit compter au plus {m[1]} caractères",
    ),
    (
        re.compile(r"the TOTP code is wrong.*"),
        lambda m: "le code à usage unique est faux : vérifiez l'heure du téléphone et réessayez",
    ),
    (
        re.compile(r"software '(.*)' is already homologated"),
        lambda m: f"le logiciel « {m[1]} » est déjà homologué",
    ),
    (
        re.compile(r"no homologated software named '(.*)'"),
        lambda m: f"aucun logiciel homologué ne s'appelle « {m[1]} »",
    ),
    (
        re.compile(r"'(.*)' is not a homologated software \(see `software list`\)"),
        lambda m: f"« {m[1]} » n'est pas un logiciel homologué",
    ),
    (
        re.compile(r"software name must be 1-200 printable characters"),
        lambda m: "le nom du logiciel doit compter de 1 à 200 caractères imprimables",
    ),
    (
        re.compile(r"publisher must be at most (\d+) characters"),
        lambda m: f"l'éditeur ne doit pas dépasser {m[1]} caractères",
    ),
    (
        re.compile(r"no credential (\d+) that is not revoked already"),
        lambda m: f"aucun identifiant {m[1]} qui ne soit déjà révoqué",
    ),
    (
        re.compile(r"two notes name the same document"),
        lambda m: "deux observations portent sur le même document",
    ),
]


def message(error: errors.GatewayError) -> str:
    """The error's message in French when the console knows it, else the CLI's words."""
    text = error.message
    for pattern, render in _PATTERNS:
        found = pattern.fullmatch(text)
        if found:
            return render(found)
    if isinstance(error, errors.KeyRefused):
        return f"clé refusée : {text}"
    return f"refusé : {text}"


def title(error: errors.GatewayError) -> str:
    """A short French heading for an error page."""
    if isinstance(error, errors.NotFound):
        return "Introuvable"
    if isinstance(error, errors.Throttled):
        return "Trop de tentatives"
    if isinstance(error, errors.NotPermitted):
        return "Accès refusé"
    if isinstance(error, errors.TemporaryFailure):
        return "Service momentanément indisponible"
    return "Demande refusée"
