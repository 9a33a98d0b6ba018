"""The CA worker: CAs, issuance, revocation, certificate status; owns schema ``ca``."""
