"""The mail store: IMailStore and its backends."""
