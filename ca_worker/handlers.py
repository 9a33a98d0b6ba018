"""The CA worker's command routes (its sweeps, CRLs and inspection have their own:
``sweeps``, ``publication``, ``inspection``). Handlers live by what they act on:
``cas``, ``certificates``, ``profile_handlers``; what they share, in ``context``.
"""

from __future__ import annotations

from ca_worker.cas import create_ca, get_ca, list_cas, revoke_ca, update_ca
from ca_worker.certificates import (
    get_certificate,
    issue_certificates,
    list_certificates,
    revoke_certificate,
    revoke_device_certificates,
    sign_certificate,
)
from ca_worker.profile_handlers import create_profile, get_profile, list_profiles
from contracts.ca import (
    CreateCA,
    GetCA,
    GetCertificate,
    IssueCertificate,
    ListCAs,
    ListCertificates,
    RevokeCA,
    RevokeCertificate,
    RevokeDeviceCertificates,
    SignCertificate,
    UpdateCA,
)
from contracts.profiles import CreateProfile, GetProfile, ListProfiles
from runtime.routes import Mode, Route, routes

__all__ = ["HANDLERS"]

HANDLERS = routes(
    Route(CreateCA, create_ca),
    Route(UpdateCA, update_ca),
    Route(RevokeCA, revoke_ca),
    Route(SignCertificate, sign_certificate),
    Route(RevokeCertificate, revoke_certificate),
    Route(RevokeDeviceCertificates, revoke_device_certificates),
    Route(IssueCertificate, handle_batch=issue_certificates),
    Route(CreateProfile, create_profile),
    Route(GetProfile, get_profile, mode=Mode.READ),
    Route(ListProfiles, list_profiles, mode=Mode.READ),
    Route(GetCA, get_ca, mode=Mode.READ),
    Route(ListCAs, list_cas, mode=Mode.READ),
    Route(GetCertificate, get_certificate, mode=Mode.READ),
    Route(ListCertificates, list_certificates, mode=Mode.READ),
)
