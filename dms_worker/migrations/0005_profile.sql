-- The issuance profile of a DMS's devices, overriding each CA's (issue 14).
ALTER TABLE dms.dms ADD COLUMN profile text;
