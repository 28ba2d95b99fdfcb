"""
Authentication: the passwd-file credential checker, login throttling and
the realm that turns an authenticated address into an account.
"""
