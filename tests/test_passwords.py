"""
Tests for L{mailsrv.cred.passwords}: Dovecot's scheme notation through passlib.
"""

from passlib.hash import sha256_crypt
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.cred.passwords import (
    UnsupportedHash,
    hash_password,
    split_scheme,
    verify_password,
)

# The SHA-crypt specification's own test vector ("Hello world!", rounds=5000).
SHA512_VECTOR = ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
                 "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1")


def cheap_hash(password: str) -> str:
    """
    A fast, accepted hash for tests that are not about hashing.
    """
    return "{SHA256-CRYPT}" + sha256_crypt.using(rounds=1000).hash(password)


class HashTests(SynchronousTestCase):
    def test_argon2ByDefault(self):
        """
        New hashes are ARGON2ID in Dovecot's notation, and verify.
        """
        stored = hash_password("correct horse")
        self.assertTrue(stored.startswith("{ARGON2ID}$argon2id$"))
        self.assertTrue(verify_password("correct horse", stored))
        self.assertFalse(verify_password("wrong horse", stored))

    def test_bcrypt(self):
        stored = hash_password("s3cret", "bcrypt")
        self.assertTrue(stored.startswith("{BLF-CRYPT}$2b$"))
        self.assertTrue(verify_password("s3cret", stored))
        self.assertFalse(verify_password("s3cre", stored))

    def test_bcryptLongPassword(self):
        """
        bcrypt uses the first 72 bytes, as crypt(3) and Dovecot do, instead of
        failing on longer passwords.
        """
        stored = hash_password("x" * 100, "bcrypt")
        self.assertTrue(verify_password("x" * 100, stored))
        self.assertTrue(verify_password("x" * 72 + "y", stored))
        self.assertFalse(verify_password("x" * 71, stored))

    def test_sha512CryptVector(self):
        self.assertTrue(verify_password("Hello world!", "{SHA512-CRYPT}" + SHA512_VECTOR))
        self.assertFalse(verify_password("Hello world", "{SHA512-CRYPT}" + SHA512_VECTOR))

    def test_cryptWithoutPrefix(self):
        """
        A bare crypt(3) hash, or one marked {CRYPT}, is identified by its form.
        """
        self.assertTrue(verify_password("Hello world!", SHA512_VECTOR))
        self.assertTrue(verify_password("Hello world!", "{CRYPT}" + SHA512_VECTOR))
        self.assertEqual(split_scheme(SHA512_VECTOR)[0], "sha512_crypt")

    def test_schemeIsCaseInsensitive(self):
        self.assertTrue(verify_password("pw", cheap_hash("pw").replace("SHA256", "sha256")))

    def test_refusedSchemes(self):
        """
        Plain text, weak and unknown schemes are refused, as are hashes whose
        form does not match their prefix.
        """
        for stored in ("{PLAIN}secret", "{CLEAR}secret", "{MD5-CRYPT}$1$abc$def",
                       "{SSHA}abcdef", "secret", "{BLF-CRYPT}" + SHA512_VECTOR,
                       "{SHA512-CRYPT}not-a-hash", "$1$salt$hash"):
            with self.assertRaises(UnsupportedHash, msg=stored):
                verify_password("secret", stored)
