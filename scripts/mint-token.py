#!/usr/bin/env python3
"""Signs a development bearer token (HS256 JWT) for orderflow's API.

Usage:
  scripts/mint-token.py --secret-file FILE --issuer ISS --audience AUD
                        [--subject SUB] [--role ROLE ...] [--ttl SECONDS]

Prints the token. Use it with grpcurl as
  -H "authorization: Bearer $(scripts/mint-token.py ...)"

For development only: the services verify HS256 tokens when they are given
AUTH_JWT_SECRET(_FILE). In production, tokens come from your identity
provider and the services hold only its public key (AUTH_JWT_PUBLIC_KEY_FILE).
Python 3 standard library only. The secret is read from a file so it never
appears in the shell history or in `ps`.

Signed with hmac here rather than with the jsonwebtoken crate the services
verify with: an operator or a test gets a token without building the
workspace, and the services' acceptance of these tokens is what
tests/e2e/tests/security.rs tests (it mints with this script).
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(secret: bytes, claims: dict) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret-file", required=True, help="file holding AUTH_JWT_SECRET")
    parser.add_argument("--issuer", required=True, help="AUTH_JWT_ISSUER of the services")
    parser.add_argument("--audience", required=True, help="AUTH_JWT_AUDIENCE of the services")
    parser.add_argument("--subject", default="developer", help="the caller (sub)")
    parser.add_argument("--role", action="append", default=[], help="a role; repeat for more (admin may refund and replay)")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    args = parser.parse_args()
    try:
        with open(args.secret_file, "rb") as f:
            secret = f.read().rstrip(b"\r\n")
    except OSError as e:
        print(f"mint-token: cannot read --secret-file: {e}", file=sys.stderr)
        return 2
    if len(secret) < 32:
        print("mint-token: the secret must be at least 32 bytes", file=sys.stderr)
        return 2
    now = int(time.time())
    claims = {
        "iss": args.issuer,
        "aud": args.audience,
        "sub": args.subject,
        "roles": args.role,
        "iat": now,
        "exp": now + args.ttl,
    }
    print(mint(secret, claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
