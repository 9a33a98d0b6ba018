"""The validation authority: OCSP responder and CRL publication, fed by CA and certificate
events; owns schema ``va``. It holds no CA keys."""
