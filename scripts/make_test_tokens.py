#!/usr/bin/env python3
"""Makes the signed-tenant test fixtures: a JWK set (an HS256 secret, a second one for rotation, an
Ed25519 public key, an RSA public key) for pg_test/regress.conf, and the tokens
pg_test/sql/69_signed_tenant.sql uses, valid until 2100, plus the attack tokens (expired, not yet
valid, alg none, edited, algorithm confusion, wrong key). HS256 with Python's hmac; EdDSA and
RS256 with the openssl command. Test keys only: they are in the repository.

usage: python3 scripts/make_test_tokens.py OUTDIR   (writes OUTDIR/token_keys.conf and
       OUTDIR/tokens.sql; the private keys stay in OUTDIR)
"""
import base64, hashlib, hmac, json, os, subprocess, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


HS1 = b"tenantguard test secret one, hs256, 32+ bytes long"
HS2 = b"tenantguard test secret two, for the key rotation"
ed = os.path.join(out, "ed25519.pem")
rsa = os.path.join(out, "rsa.pem")
if not os.path.exists(ed):
    openssl("genpkey", "-algorithm", "ed25519", "-out", ed)
if not os.path.exists(rsa):
    openssl("genrsa", "-out", rsa, "2048")
ed_pub = openssl("pkey", "-in", ed, "-pubout", "-outform", "DER")[-32:]
modulus = openssl("rsa", "-in", rsa, "-noout", "-modulus").decode().strip().split("=", 1)[1]
n = bytes.fromhex(modulus)
rsa_pub_pem = openssl("rsa", "-in", rsa, "-pubout")

keys = {"keys": [
    {"kty": "oct", "kid": "hs1", "alg": "HS256", "k": b64(HS1)},
    {"kty": "oct", "kid": "hs2", "alg": "HS256", "k": b64(HS2)},
    {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "alg": "EdDSA", "x": b64(ed_pub)},
    {"kty": "RSA", "kid": "rs1", "alg": "RS256", "n": b64(n), "e": "AQAB"},
]}

FAR = 4102444800   # 2100-01-01
PAST = 946684800   # 2000-01-01


def token(header, claims, sign):
    msg = (b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
           b64(json.dumps(claims, separators=(",", ":")).encode())).encode()
    return msg.decode() + "." + b64(sign(msg))


def hs(secret):
    return lambda m: hmac.new(secret, m, hashlib.sha256).digest()


def eddsa(m):
    # Ed25519 signs the whole message at once: openssl reads it from a file, not a pipe.
    path = os.path.join(out, "message")
    with open(path, "wb") as f:
        f.write(m)
    return openssl("pkeyutl", "-sign", "-inkey", ed, "-rawin", "-in", path)


def rs256(m):
    return openssl("dgst", "-sha256", "-sign", rsa, data=m)


def claims(tenant, **more):
    c = {"tenant_id": tenant, "sub": "user-of-" + str(tenant), "exp": FAR}
    c.update(more)
    return c


H = lambda kid, alg="HS256": {"alg": alg, "typ": "JWT", "kid": kid}
acme = token(H("hs1"), claims("acme"), hs(HS1))
tokens = {
    "tok_acme": acme,
    "tok_globex": token(H("hs1"), claims("globex"), hs(HS1)),
    "tok_acme_hs2": token(H("hs2"), claims("acme"), hs(HS2)),
    "tok_acme_ed": token(H("ed1", "EdDSA"), claims("acme"), eddsa),
    "tok_acme_rs": token(H("rs1", "RS256"), claims("acme"), rs256),
    "tok_list": token(H("hs1"), claims(["acme", "globex"]), hs(HS1)),
    "tok_expired": token(H("hs1"), claims("acme", exp=PAST), hs(HS1)),
    "tok_not_yet": token(H("hs1"), claims("acme", nbf=FAR, exp=FAR + 3600), hs(HS1)),
    "tok_no_exp": token(H("hs1"), {"tenant_id": "acme"}, hs(HS1)),
    "tok_no_tenant": token(H("hs1"), {"sub": "x", "exp": FAR}, hs(HS1)),
    "tok_no_kid": token({"alg": "HS256", "typ": "JWT"}, claims("acme"), hs(HS1)),
    "tok_unknown_kid": token(H("nope"), claims("acme"), hs(HS1)),
    "tok_wrong_secret": token(H("hs1"), claims("globex"), hs(b"not the configured secret at all")),
    # alg none, unsigned
    "tok_alg_none": b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." +
                    b64(json.dumps(claims("globex")).encode()) + ".",
    # acme's token with the payload edited to globex, signature kept
    "tok_edited": acme.split(".")[0] + "." + b64(json.dumps(claims("globex"), separators=(",", ":")).encode())
                  + "." + acme.split(".")[2],
    # algorithm confusion: HS256 "signed" with the RSA public key (PEM, and the modulus) as the secret
    "tok_confused_pem": token(H("rs1"), claims("globex"), hs(rsa_pub_pem)),
    "tok_confused_n": token(H("rs1"), claims("globex"), hs(n)),
    # an EdDSA kid with an HS256 header signed with the public key bytes
    "tok_confused_ed": token(H("ed1"), claims("globex"), hs(ed_pub)),
}
with open(os.path.join(out, "token_keys.conf"), "w") as f:
    f.write("tenantguard.token_keys = '%s'\n" % json.dumps(keys, separators=(",", ":")))
with open(os.path.join(out, "tokens.sql"), "w") as f:
    for k, v in tokens.items():
        f.write("\\set %s '%s'\n" % (k, v))
print("wrote", out)
