"""ESMTP: the server protocol, its delivery policy, and the addresses it parses."""
