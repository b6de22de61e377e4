"""The shared secret, secure by default: configured (and then strong), or generated once into
the data folder (mode 0600) and read from there by every later start."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

MIN_SECRET_LENGTH = 32
SECRET_FILE = "jwt-secret"


class WeakSecret(ValueError):
    """The configured secret is too short or too plain to sign tokens with."""


def check_strength(secret: str) -> str:
    """The secret itself if strong enough (32+ characters, 10+ distinct); raises WeakSecret."""
    if len(secret) < MIN_SECRET_LENGTH or len(set(secret)) < 10:
        raise WeakSecret(f"TOH_JWT_SECRET is too weak: use at least {MIN_SECRET_LENGTH} random characters "
                         "(or leave it unset and the service makes one in its data folder)")
    return secret


def data_folder_secret(data_dir: str | Path, file_name: str = SECRET_FILE) -> str:
    """The secret kept in data_dir/file_name (default jwt-secret), made (48 random bytes,
    mode 0600) if missing.

    Two processes starting at once agree: the file is created exclusively and a loser reads
    the winner's. Raises OSError if the folder cannot be written.
    """
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return check_strength(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip()
