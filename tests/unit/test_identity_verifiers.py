"""The server's token checks, against a real issuer on 127.0.0.1 (``tests/oidc_issuer.py``) standing in
for a company's OIDC provider, Google's key server and Microsoft Entra's authority.

The server's clock is a :class:`ManualClock`, so expiry, ``nbf`` and the JWKS refetch cool-down are
checked by moving it, never by waiting.
"""
from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import httpx
import pytest

from mlplat.errors import ExitCode, IdentityProviderUnavailable, StackError, Unauthenticated
from mlplat.identity import ENTRA, GOOGLE, OIDC, matches
from mlplat.identity.jwks import KeyRefused, KeySet
from mlplat.identity.verifiers import (
    LEEWAY_S,
    EntraAuthenticator,
    GoogleAuthenticator,
    OidcAuthenticator,
    authenticator_for,
)
from mlplat.netguard import require_loopback
from mlplat.stack import Access
from tests.oidc_issuer import SigningKey, running_issuer
from tests.server_support import free_port
from tests.timing import ManualClock

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.fixture
def issuer():
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture
def clock(issuer):
    clock = ManualClock(1_900_000_000)
    issuer.clock = clock  # the issuer stamps iat/exp from the same time the server reads
    return clock


def spec(**access) -> SimpleNamespace:
    return SimpleNamespace(name="dev", access=Access.model_validate(access))


def oidc(issuer, clock, *, cooldown: float = 60.0, **settings) -> OidcAuthenticator:
    auth = authenticator_for(spec(mode="oidc", oidc={"issuer": issuer.url, "audience": "mlplat", **settings}),
                             clock=clock, jwks_cooldown=cooldown)
    assert isinstance(auth, OidcAuthenticator)
    auth.check()
    return auth


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def refused(auth, headers) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(headers)
    err = caught.value
    assert err.http_status == 401 and err.exit_code == ExitCode.DENIED
    assert "mlplat login --stack dev" in err.hint
    return err


# --- OIDC ---------------------------------------------------------------------------------------


def test_a_valid_token_names_the_caller_with_its_ids_and_groups(issuer, clock):
    auth = oidc(issuer, clock)
    who = auth.authenticate(bearer(issuer.token(sub="u-1", email="alice@example.com", groups=["platform"])))
    assert (who.name, who.method, who.ids, who.groups) == ("alice@example.com", OIDC, ("u-1",), ("platform",))
    assert who.issuer == issuer.url and who.expires_at == clock() + issuer.token_lifetime
    assert matches("group:platform", who) and matches("user:u-1", who) and not matches("group:other", who)


def test_the_name_comes_from_the_configured_claim_else_sub(issuer, clock):
    auth = oidc(issuer, clock, principalClaim="preferred_username", groupsClaim="roles")
    named = auth.authenticate(bearer(issuer.token(sub="u-2", preferred_username="bob", roles=["ops"])))
    assert (named.name, named.groups) == ("bob", ("ops",))
    assert auth.authenticate(bearer(issuer.token(sub="u-3"))).name == "u-3"


@pytest.mark.parametrize("make, reason", [
    (lambda i: i.token(exp_in=-(LEEWAY_S + 1)), "expired"),
    (lambda i: i.token(nbf_in=LEEWAY_S + 60), "not valid yet"),
    (lambda i: i.token(aud="another-api"), "not meant for this server"),
    (lambda i: i.token(iss="https://evil.example.com"), "not issued by the configured issuer"),
    (lambda i: i.forge_none(), "algorithm 'none' is not accepted"),
    (lambda i: i.forge_hs256_with_public_key(), "algorithm 'HS256' is not accepted"),
    (lambda i: i.token(key=SigningKey.generate()), "key the identity provider does not publish"),
    (lambda i: "not-a-token", "not a JSON Web Token"),
    (lambda i: i.token(email="alice@example.com", email_verified=False), "e-mail address is not verified"),
])
def test_every_bad_token_is_a_401_naming_why(issuer, clock, make, reason):
    auth = oidc(issuer, clock)
    err = refused(auth, bearer(make(issuer)))
    assert reason in err.message
    assert "BEGIN" not in err.message and issuer.key.jwk()["n"][:20] not in err.message  # no key material


def test_a_tampered_payload_fails_its_signature(issuer, clock):
    auth = oidc(issuer, clock)
    head, body, sig = issuer.token(email="alice@example.com").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["email"] = "risk-office@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert "signature does not verify" in refused(auth, bearer(f"{head}.{forged}.{sig}")).message


@pytest.mark.parametrize("headers, reason", [
    ({}, "no credentials"),
    ({"authorization": "   "}, "no credentials"),
    ({"authorization": "Basic YWxpY2U6cHc="}, "takes a bearer token"),
    ({"authorization": "Bearer " + "a" * 20_000}, "longer than"),
])
def test_missing_or_malformed_credentials_are_401(issuer, clock, headers, reason):
    assert reason in refused(oidc(issuer, clock), headers).message


def test_expiry_and_nbf_are_read_from_the_servers_clock_with_a_small_leeway(issuer, clock):
    auth = oidc(issuer, clock)
    token = issuer.token(exp_in=60)
    clock.advance(60 + LEEWAY_S - 1)  # past exp, within the leeway
    assert auth.authenticate(bearer(token)).name == "alice"
    clock.advance(2)
    assert "expired" in refused(auth, bearer(token)).message
    early = issuer.token(nbf_in=120)
    assert "not valid yet" in refused(auth, bearer(early)).message
    clock.advance(120 - LEEWAY_S)
    assert auth.authenticate(bearer(early)).name == "alice"


@pytest.mark.parametrize("claim", ["exp", "sub", "aud", "iss"])
def test_a_token_without_a_required_claim_is_refused(issuer, clock, claim):
    assert f"no '{claim}' claim" in refused(oidc(issuer, clock), bearer(signed(issuer, **{claim: None}))).message


def test_keys_are_fetched_once_for_many_tokens_and_again_after_a_rotation(issuer, clock):
    auth = oidc(issuer, clock)
    assert issuer.jwks_requests == 1  # check() read them
    for n in range(5):
        auth.authenticate(bearer(issuer.token(sub=f"u{n}")))
    assert issuer.jwks_requests == 1
    issuer.rotate()
    assert auth.authenticate(bearer(issuer.token(sub="after"))).name == "after"
    assert issuer.jwks_requests == 2  # the new kid: one refetch


def test_unknown_key_ids_refetch_at_most_once_per_cooldown(issuer, clock):
    auth = oidc(issuer, clock, cooldown=60)
    stranger = SigningKey.generate()
    for _ in range(20):
        refused(auth, bearer(issuer.token(key=stranger)))
    assert issuer.jwks_requests == 2  # check(), then one refetch for the first unknown kid
    issuer.rotate()  # the provider rotates during the cool-down: its new key waits for it to pass
    new = issuer.token(sub="rotated")
    assert "does not publish" in refused(auth, bearer(new)).message
    assert issuer.jwks_requests == 2
    clock.advance(60)
    assert auth.authenticate(bearer(new)).name == "rotated"
    assert issuer.jwks_requests == 3


def test_a_key_is_used_only_with_its_own_algorithm(issuer, clock):
    """PS256 is configured, and the key is RSA, but the key says RS256: a PS256 token is refused."""
    import jwt

    auth = oidc(issuer, clock, algorithms=["RS256", "PS256"])
    ps = jwt.encode(issuer.claims(), issuer.key.private, algorithm="PS256", headers={"kid": issuer.key.kid})
    assert "not the algorithm of its key (RS256)" in refused(auth, bearer(ps)).message


def test_keys_without_alg_verify_only_their_key_types_algorithms():
    """Microsoft's keys name no ``alg``: an RSA key then verifies RS*/PS*, never ES256 or HS256."""
    key = SigningKey.generate()
    jwk = {k: v for k, v in key.jwk().items() if k != "alg"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"keys": [jwk, {"kty": "oct", "kid": "s",
                                                                                              "k": "c2VjcmV0"}]}))
    keys = KeySet("https://keys.example/jwks", http=httpx.Client(transport=transport), clock=ManualClock(0))
    assert keys.load() == 1  # the symmetric key is not a signing key here
    assert keys.key(key.kid, "PS256").algorithm_name == "PS256"
    with pytest.raises(KeyRefused, match="does not fit its key"):
        keys.key(key.kid, "ES256")
    with pytest.raises(KeyRefused, match="does not publish"):
        keys.key("s", "HS256")


def test_an_issuer_outage_keeps_the_keys_already_held(issuer, clock):
    auth = oidc(issuer, clock)
    token = issuer.token()
    auth.authenticate(bearer(token))
    assert auth.keys is not None
    auth.keys.uri = f"http://127.0.0.1:{free_port()}/jwks"  # the provider goes away
    clock.advance(2 * 3600)  # the cached set is old: a refetch is tried, fails, the held keys still verify
    assert auth.authenticate(bearer(issuer.token())).name == "alice"


def test_no_keys_at_all_is_503_not_401(clock):
    settings = {"issuer": f"http://127.0.0.1:{free_port()}", "audience": "mlplat"}
    auth = authenticator_for(spec(mode="oidc", oidc=settings), clock=clock)
    with pytest.raises(IdentityProviderUnavailable) as caught:
        auth.authenticate(bearer("a.b.c"))
    assert caught.value.http_status == 503


# --- starting the server: check() -----------------------------------------------------------------


def test_check_refuses_an_issuer_that_does_not_answer(clock):
    settings = {"issuer": f"http://127.0.0.1:{free_port()}", "audience": "mlplat"}
    with pytest.raises(StackError) as caught:
        authenticator_for(spec(mode="oidc", oidc=settings), clock=clock).check()
    assert caught.value.where == "mlplat:access.oidc.issuer" and caught.value.exit_code == ExitCode.CONFIG
    assert "openid-configuration" in caught.value.hint


def test_check_refuses_a_discovery_document_naming_another_issuer(issuer, clock):
    settings = {"issuer": issuer.url.replace("127.0.0.1", "localhost"), "audience": "mlplat"}
    with pytest.raises(StackError) as caught:
        authenticator_for(spec(mode="oidc", oidc=settings), clock=clock).check()
    assert caught.value.where == "mlplat:access.oidc.issuer"
    assert f"names issuer '{issuer.url}'" in caught.value.message


def test_check_refuses_an_empty_key_set(issuer, clock):
    issuer.keys = []
    with pytest.raises(StackError, match="publishes no asymmetric signing key"):
        oidc(issuer, clock)


def test_only_authenticated_modes_have_an_authenticator():
    assert authenticator_for(spec()) is None
    assert authenticator_for(spec(mode="os-user")) is None
    assert authenticator_for(spec(mode="trusted-local")) is None


def test_authenticated_servers_may_bind_any_address_others_loopback_only():
    require_loopback("0.0.0.0", authenticated=True)
    with pytest.raises(Exception, match="no authentication") as caught:
        require_loopback("0.0.0.0", authenticated=False, how="set mlplat:access.mode to oidc")
    assert caught.value.hint.startswith("set mlplat:access.mode to oidc, or bind to 127.0.0.1")


# --- Google ---------------------------------------------------------------------------------------


def google(issuer, clock, **settings) -> GoogleAuthenticator:
    auth = authenticator_for(spec(mode="google", google={"audience": "mlplat", **settings}), clock=clock,
                             google_certs_url=issuer.url + "/jwks")
    assert isinstance(auth, GoogleAuthenticator)
    auth.check()
    return auth


def signed(issuer, **claims) -> str:
    """A token signed by the issuer with its default claims, ``claims`` on top (None: left out)."""
    import jwt

    body = {k: v for k, v in (issuer.claims() | claims).items() if v is not None}
    return jwt.encode(body, issuer.key.private, algorithm="RS256", headers={"kid": issuer.key.kid})


def google_token(issuer, **claims):
    base = {"iss": "https://accounts.google.com", "email": "ana@corp.example", "email_verified": True,
            "hd": "corp.example", "sub": "1044"}
    return signed(issuer, **(base | claims))


@pytest.mark.parametrize("iss", ["https://accounts.google.com", "accounts.google.com"])
def test_google_id_tokens_of_either_issuer_name_the_verified_email(issuer, clock, iss):
    who = google(issuer, clock, hostedDomain="corp.example").authenticate(bearer(google_token(issuer, iss=iss)))
    assert (who.name, who.method, who.ids) == ("ana@corp.example", GOOGLE, ("1044",))


@pytest.mark.parametrize("claims, reason", [
    ({"email_verified": False}, "not verified"),
    ({"email_verified": None}, "not verified"),
    ({"email": None}, "carries no e-mail"),
    ({"hd": "other.example"}, "not in the Google Workspace domain corp.example"),
    ({"hd": None}, "not in the Google Workspace domain corp.example"),
    ({"iss": "https://accounts.google.com.evil.example"}, "not issued by the configured issuer"),
    ({"aud": "someone-else"}, "not meant for this server"),
])
def test_google_rules_refuse(issuer, clock, claims, reason):
    auth = google(issuer, clock, hostedDomain="corp.example")
    assert reason in refused(auth, bearer(google_token(issuer, **claims))).message


def test_google_without_a_hosted_domain_takes_any_verified_account(issuer, clock):
    assert google(issuer, clock).authenticate(bearer(google_token(issuer, hd="gmail.com"))).name == "ana@corp.example"


# --- Entra ----------------------------------------------------------------------------------------


def entra(issuer, clock) -> EntraAuthenticator:
    auth = authenticator_for(spec(mode="entra", entra={"tenantId": TENANT, "audience": "api://mlplat"}),
                             clock=clock, entra_authority=issuer.url)
    assert isinstance(auth, EntraAuthenticator)
    auth.check()  # the keys come from {authority}/{tenant}/discovery/v2.0/keys
    return auth


def entra_token(issuer, **claims):
    base = {"iss": f"{issuer.url}/{TENANT}/v2.0", "aud": "api://mlplat", "tid": TENANT, "oid": "0b7c-oid",
            "sub": "pairwise-sub", "preferred_username": "ana@corp.example", "ver": "2.0"}
    return signed(issuer, **(base | claims))


def test_entra_v2_token_names_the_user_with_oid_groups_and_app_roles(issuer, clock):
    who = entra(issuer, clock).authenticate(bearer(entra_token(issuer, groups=["g-1"], roles=["Platform.Admin"])))
    assert (who.name, who.method, who.ids) == ("ana@corp.example", ENTRA, ("0b7c-oid",))
    assert who.groups == ("g-1", "approle:Platform.Admin")
    assert matches("group:approle:Platform.Admin", who) and matches("0b7c-oid", who)


def test_entra_v1_token_names_the_upn_else_the_oid(issuer, clock):
    auth = entra(issuer, clock)
    v1 = {"iss": f"https://sts.windows.net/{TENANT}/", "ver": "1.0", "preferred_username": None}
    assert auth.authenticate(bearer(entra_token(issuer, upn="ana@corp.example", **v1))).name == "ana@corp.example"
    assert auth.authenticate(bearer(entra_token(issuer, **v1))).name == "0b7c-oid"


@pytest.mark.parametrize("claims, reason", [
    ({"tid": "00000000-0000-0000-0000-000000000000"}, "another tenant"),
    ({"iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/"}, "not issued by the configured issuer"),
    ({"iss": "https://login.microsoftonline.com/common/v2.0"}, "not issued by the configured issuer"),
    ({"aud": "api://other"}, "not meant for this server"),
    ({"oid": ""}, "no 'oid' claim"),
])
def test_entra_rules_refuse(issuer, clock, claims, reason):
    assert reason in refused(entra(issuer, clock), bearer(entra_token(issuer, **claims))).message


def test_entra_needs_a_tenant_id_not_common(issuer, clock):
    auth = authenticator_for(spec(mode="entra", entra={"tenantId": "common", "audience": "api://mlplat"}),
                             clock=clock, entra_authority=issuer.url)
    with pytest.raises(StackError) as caught:
        auth.check()
    assert caught.value.where == "mlplat:access.entra.tenantId"
