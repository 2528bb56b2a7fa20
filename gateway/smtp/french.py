"""The French words of every SMTP refusal: one text per error class, finer ones for documents.

A refusal reaches a guardian through their own provider's bounce, quoting
the reply; guardians read French.  So every refusal says it in French
first, then in English (`gateway.smtp.replies` puts them together).  SMTP
replies are ASCII, so the French is written without accents ("refuse",
"numero de saisie").  The English part keeps the details (a document's
name, a domain, a limit); the French part names what a guardian acts on
(which document, what kind of fault) and nothing a sender wrote: only
digits taken from our own English message are copied into it.
"""

from __future__ import annotations

import re

from gateway import errors

# Looked up along the error's class hierarchy: the most specific class wins.
FRENCH: dict[type[errors.GatewayError], str] = {
    errors.GatewayError: "erreur temporaire, reessayez plus tard",
    errors.KeyRefused: "erreur temporaire de la passerelle, reessayez plus tard",
    errors.MessageRefused: "message refuse",
    errors.UnknownRecipient: "adresse inconnue",
    errors.MessageTooLarge: "message trop volumineux",
    errors.MalformedMessage: "message mal forme",
    errors.BareLineEnding: "fins de ligne non conformes (CR ou LF seul)",
    errors.SenderAuthError: "expediteur non authentifie",
    errors.NoSignature: "message sans signature DKIM de votre messagerie",
    errors.BadSignature: "signature DKIM non valide",
    errors.NotAligned: "signature DKIM d'un autre domaine que celui de l'expediteur",
    errors.SignatureRefused: "signature DKIM non acceptee",
    errors.BodyLengthLimited: "signature DKIM non acceptee: elle ne couvre pas tout le message",
    errors.WeakAlgorithm: "signature DKIM non acceptee: algorithme rsa-sha1 trop faible",
    errors.WeakKey: "signature DKIM non acceptee: cle trop courte",
    errors.HeaderNotSigned: "signature DKIM non acceptee: en-tete non signe",
    errors.SenderNotRegistered: "adresse d'expedition non enregistree aupres du greffe",
    errors.SenderNotAuthenticated: "l'expediteur n'est pas l'adresse authentifiee",
    errors.MultipleFrom: "un seul expediteur attendu dans From:",
    errors.CodeError: "numero de saisie refuse",
    errors.CodeMissing: "numero de saisie absent de l'objet et de l'adresse",
    errors.CodeUnknown: "numero de saisie non valide",
    errors.CodeExpired: "numero de saisie expire, demandez-en un nouveau",
    errors.CodeMismatch: "numero de saisie d'une autre adresse",
    errors.CodeLocked: "trop de numeros de saisie errones, reessayez plus tard",
    errors.CredentialRefused: "identifiant de teletransmission plus valable",
    errors.RequestClosed: "requete close, demandez un nouveau numero de saisie",
    errors.BadCommand: "objet non compris",
    errors.DocumentRefused: "document refuse",
    errors.FilingRefused: "donnees depot.json non conformes",
    errors.AuthRefused: "authentification refusee",
    errors.CredentialInvalid: "identifiants non valides",
    errors.AuthLocked: "trop d'echecs d'authentification, reessayez plus tard",
    errors.TemporaryFailure: "erreur temporaire, reessayez plus tard",
    errors.StorageUnavailable: "stockage momentanement indisponible, reessayez plus tard",
    errors.BlobStoreFull: "stockage de la passerelle plein, reessayez plus tard",
    errors.CommitUncertain: "enregistrement incertain, renvoyez le message plus tard",
    errors.DnsTemporaryFailure: "DNS momentanement indisponible, reessayez plus tard",
    errors.DiskFull: "espace de stockage insuffisant, reessayez plus tard",
    errors.CourtKeyExpired: "cle de chiffrement de la juridiction expiree, reessayez plus tard",
    errors.ImapUnavailable: "serveur IMAP indisponible, reessayez plus tard",
    errors.Throttled: "trop de messages, reessayez plus tard",
}

# A class whose English says more than its class: the first pattern found wins.
_FINER: dict[type[errors.GatewayError], tuple[tuple[re.Pattern[str], str], ...]] = {
    errors.SenderNotRegistered: (
        (
            re.compile(r" is not registered for "),
            "adresse non enregistree pour cette juridiction et cette mesure",
        ),
    ),
    errors.CredentialInvalid: (
        (re.compile(r": credential revoked$"), "identifiant revoque"),
        (re.compile(r": credential expired$"), "identifiant expire"),
        (re.compile(r": software "), "logiciel dont l'homologation est retiree"),
    ),
    errors.MalformedMessage: ((re.compile(r"^no From: header$"), "en-tete From: absent"),),
}

# What follows `document N "name"` in a DocumentRefused (gateway.ingest.documents, pdfcheck).
_DOCUMENT = re.compile(r'document ([0-9]{1,4}) (?:"[^"]*"|\(unnamed\))(.*)\Z', re.DOTALL)
_DOCUMENT_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^ is larger than [0-9]+ bytes$"), "trop volumineux"),
    (re.compile(r"^: type \S+ is not allowed$"), "type non autorise"),
    (re.compile(r"^: the PDF is truncated"), "PDF tronque"),
    (re.compile(r"^: data after the end of the PDF is "), "un autre fichier suit la fin du PDF"),
    (re.compile(r"^: a ZIP archive is hidden in the PDF$"), "archive ZIP cachee dans le PDF"),
    (re.compile(r"^: the PDF has more than [0-9]+ objects$"), "PDF trop complexe"),
    (re.compile(r"^: the PDF is protected by a password$"), "PDF protege par un mot de passe"),
    (re.compile(r"^: not a readable PDF$"), "PDF illisible"),
)


def french_for(error: errors.GatewayError) -> str:
    """The French words for `error` (ASCII): its class's, or finer when its English says more."""
    if type(error) is errors.DocumentRefused:
        return _document(error.message)
    for pattern, finer in _FINER.get(type(error), ()):
        if pattern.search(error.message):
            return finer
    for cls in type(error).__mro__:
        words = FRENCH.get(cls) if issubclass(cls, errors.GatewayError) else None
        if words is not None:
            return words
    return FRENCH[errors.GatewayError]


def _document(message: str) -> str:
    """Which document, and why, in French: `document 2 refuse: type non autorise`."""
    if message.startswith("too many documents"):
        return "trop de documents"
    found = _DOCUMENT.match(message)
    if found is None:
        return FRENCH[errors.DocumentRefused]
    index, rest = found.groups()
    reason = next((text for pattern, text in _DOCUMENT_REASONS if pattern.search(rest)), None)
    return f"document {index} refuse: {reason}" if reason else f"document {index} refuse"
