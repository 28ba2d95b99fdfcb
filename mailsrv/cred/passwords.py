"""
Password hashes in Dovecot's C{{SCHEME}hash} notation, through passlib.

Accepted: ARGON2ID/ARGON2I, BLF-CRYPT (bcrypt), SHA512-CRYPT, SHA256-CRYPT,
and CRYPT or no prefix when the hash is one of those.  New hashes are argon2
or bcrypt.  Plain-text and weak schemes are refused.  These calls are slow on
purpose: call them in a thread, never on the reactor.
"""

from passlib.context import CryptContext

#: Dovecot scheme prefix -> passlib handler name.
SCHEMES = {
    "ARGON2ID": "argon2",
    "ARGON2I": "argon2",
    "BLF-CRYPT": "bcrypt",
    "SHA512-CRYPT": "sha512_crypt",
    "SHA256-CRYPT": "sha256_crypt",
}

#: The prefix written for new hashes of each configurable scheme.
_NEW_HASH_PREFIX = {"argon2": "ARGON2ID", "bcrypt": "BLF-CRYPT"}

#: bcrypt reads only the first 72 bytes of a password; crypt(3) and Dovecot
#: ignore the rest, and so do we (the bcrypt package refuses longer input).
_BCRYPT_MAX = 72

_context = CryptContext(schemes=sorted(set(SCHEMES.values())), default="argon2")


class UnsupportedHash(ValueError):
    """
    A stored password is in a scheme mailsrv does not accept.
    """


def _secret(handler_name: str, password: str) -> bytes:
    secret = password.encode("utf-8")
    return secret[:_BCRYPT_MAX] if handler_name == "bcrypt" else secret


def split_scheme(stored: str) -> tuple[str, str]:
    """
    Split C{{SCHEME}hash} into the passlib handler name and the hash.

    @raise UnsupportedHash: if the scheme is not accepted or the hash does
        not have the form its scheme promises.
    """
    scheme, hashed = "CRYPT", stored
    if stored.startswith("{") and "}" in stored:
        scheme, _, hashed = stored[1:].partition("}")
        scheme = scheme.upper()
    if scheme == "CRYPT":
        name = _context.identify(hashed, required=False)
    else:
        name = SCHEMES.get(scheme)
    if name is None:
        raise UnsupportedHash(f"password scheme {{{scheme}}} is not accepted "
                              f"(use {', '.join('{' + s + '}' for s in SCHEMES)})")
    if not _context.handler(name).identify(hashed):
        raise UnsupportedHash(f"not a valid {{{scheme}}} hash")
    return name, hashed


def hash_password(password: str, scheme: str = "argon2") -> str:
    """
    Hash a new password, prefixed as Dovecot writes it.
    """
    hashed = _context.handler(scheme).hash(_secret(scheme, password))
    return "{" + _NEW_HASH_PREFIX[scheme] + "}" + hashed


def verify_password(password: str, stored: str) -> bool:
    """
    Whether C{password} matches the stored C{{SCHEME}hash}.
    """
    name, hashed = split_scheme(stored)
    return _context.handler(name).verify(_secret(name, password), hashed)


def dummy_verify() -> bool:
    """
    Spend as long as a real check, for logins of users that do not exist.
    """
    return _context.dummy_verify()
