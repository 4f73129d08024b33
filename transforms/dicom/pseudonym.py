"""Salted pseudonyms for patient identifiers.

Raw patient identifiers never leave ingest: sidecars, manifests and reports carry
``patient_key(PatientID)``, an HMAC-SHA256 of the identifier under a secret salt. The salt comes from
``$ICHCT_SALT`` or, when unset, from a random salt created once in ``~/.config/ichct/salt`` (the
location can be moved with ``$ICHCT_SALT_FILE``). ``salt_id`` identifies a salt without revealing it,
so that two manifests can be checked for having been hashed with the same salt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SALT_ENV = "ICHCT_SALT"
SALT_FILE_ENV = "ICHCT_SALT_FILE"


def _salt_file() -> Path:
    override = os.environ.get(SALT_FILE_ENV)
    if override:
        return Path(override).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return config_home / "ichct" / "salt"


def load_salt() -> str:
    """Return the pseudonymisation salt, creating a random one on first use.

    The salt comes from ``$ICHCT_SALT``, else from the file ``$ICHCT_SALT_FILE`` (default
    ``$XDG_CONFIG_HOME/ichct/salt``, i.e. ``~/.config/ichct/salt``), which is created with a
    random salt when missing.

    Examples
    --------
    Reads (and may create) the salt file, so not run here::

        salt = load_salt()
        salt_id(salt)    # the fingerprint recorded in sidecars, e.g. "679c6e17db04"
    """
    from_env = os.environ.get(SALT_ENV)
    if from_env:
        return from_env
    path = _salt_file()
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(32)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(salt, encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return salt


def salt_id(salt: str | None = None) -> str:
    """A short public fingerprint of the salt (not the salt itself).

    Examples
    --------
    >>> from ichct.transforms.dicom import salt_id
    >>> salt_id("example-salt")
    '679c6e17db04'
    """
    salt = load_salt() if salt is None else salt
    return hashlib.sha256(("ichct-salt-id:" + salt).encode("utf-8")).hexdigest()[:12]


def patient_key(patient_id: str | None, salt: str | None = None) -> str | None:
    """Salted hash of a patient identifier (``None`` when the identifier is missing).

    Examples
    --------
    >>> from ichct.transforms.dicom import patient_key
    >>> patient_key("PAT-0001", salt="example-salt")
    '13683273f904c7cc'
    >>> patient_key(" PAT-0001 ", salt="example-salt"), patient_key("", salt="example-salt")
    ('13683273f904c7cc', None)
    """
    if patient_id is None or str(patient_id).strip() == "":
        return None
    salt = load_salt() if salt is None else salt
    digest = hmac.new(salt.encode("utf-8"), str(patient_id).strip().encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:16]
