"""
Outbound mail: the durable spool, routing to MX hosts, the SMTP client and
the runner that retries, bounces and signs.
"""
