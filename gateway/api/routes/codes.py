"""/api/v1/codes: ask for a code on a guardian's behalf; always 202, like codes@ (admin keys)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, status

from gateway.api.auth import AdminKey
from gateway.api.context import Deps
from gateway.api.problems import API_STATUSES, documented
from gateway.api.schemas import CodeAccepted, CodeRequestIn
from gateway.model import Mailbox, court_code, measure_number

router = APIRouter(prefix="/api/v1/codes", tags=["codes"], responses=documented(*API_STATUSES))
log = logging.getLogger("gateway.api")


@router.post("", response_model=CodeAccepted, status_code=status.HTTP_202_ACCEPTED)
def request_code(body: CodeRequestIn, deps: Deps, who: AdminKey) -> dict[str, str]:
    """Open a request and mail its code to the registered address, if that registration exists.

    The answer is the same whether or not it does (the audit trail says which).
    """
    court, measure = court_code(body.court), measure_number(body.measure)
    mailbox = Mailbox.parse(body.address)
    reason = deps.codes.request(court, measure, mailbox.key, body.kind, who.actor)
    if reason:
        log.info("code request not honoured: %s", reason)
    return {"status": "accepted"}
