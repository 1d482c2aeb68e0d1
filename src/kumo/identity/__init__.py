"""Identity: the local CA, token signing, OIDC/token endpoints and the directory of principals."""
