"""`ikdctl dev-issuer`: a local IKD issuer for development (init a key, mint credentials)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from ikd_dev.issuer import (
    DEFAULT_ISSUER,
    JWKS_FILE,
    KEY_FILE,
    Algorithm,
    generate_issuer_key,
    mint_credential,
    public_jwk,
    read_private_key,
    write_private_key,
)
from ikd_dev.synthetic import citizen
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.nik import InvalidNik, parse_nik

dev_issuer_app = typer.Typer(
    help="DEVELOPMENT ONLY: a local IKD issuer; production trusts only IKD_IDENTITY_TRUST_JWKS",
    no_args_is_help=True,
)


@dev_issuer_app.command("init")
def dev_issuer_init(
    out: Annotated[Path, typer.Option(help="folder for the key and JWKS files")],
    algorithm: Annotated[str, typer.Option("--alg", help="EdDSA or ES256")] = "EdDSA",
    kid: Annotated[str, typer.Option(help="key id")] = "dev-dukcapil-1",
    force: Annotated[bool, typer.Option(help="replace an existing key")] = False,
) -> None:
    """Create a development issuer key pair and its JWKS (trust it with TRUST_JWKS=@...)."""
    if algorithm not in ("EdDSA", "ES256"):
        raise typer.BadParameter("EdDSA or ES256", param_hint="--alg")
    alg: Algorithm = "EdDSA" if algorithm == "EdDSA" else "ES256"
    out.mkdir(parents=True, exist_ok=True)
    if (out / KEY_FILE).exists() and not force:
        typer.echo(f"{out / KEY_FILE} exists; keeping it (--force replaces it)")
        return
    key = generate_issuer_key(alg)
    write_private_key(out / KEY_FILE, key)
    (out / JWKS_FILE).write_text(json.dumps({"keys": [public_jwk(key, kid)]}, indent=2))
    typer.echo(f"wrote {out / KEY_FILE} and {out / JWKS_FILE} ({alg}, kid {kid})")


@dev_issuer_app.command("mint")
def dev_issuer_mint(
    key_dir: Annotated[Path, typer.Option(help="folder written by `dev-issuer init`")],
    seed: Annotated[int, typer.Option(help="synthetic citizen seed")] = 0,
    index: Annotated[int, typer.Option(help="synthetic citizen index")] = 0,
    nik: Annotated[
        str | None, typer.Option(help="use this NIK (birth date and sex follow)")
    ] = None,
    profile_file: Annotated[
        Path | None, typer.Option("--profile", help="a CitizenProfile JSON file")
    ] = None,
    purpose: Annotated[
        Purpose, typer.Option(help="what the citizen presents it for (one purpose, once)")
    ] = Purpose.VERIFICATION,
    issuer: Annotated[str, typer.Option(help="iss claim")] = DEFAULT_ISSUER,
    audience: Annotated[
        str | None, typer.Option(help="aud claim (default: the purpose's audience)")
    ] = None,
    lifetime: Annotated[int, typer.Option(help="seconds until exp")] = 600,
    show_profile: Annotated[bool, typer.Option(help="print the profile to stderr")] = False,
) -> None:
    """Print a credential signed by the development issuer, for one purpose."""
    key = read_private_key(key_dir / KEY_FILE)
    kid = json.loads((key_dir / JWKS_FILE).read_text())["keys"][0]["kid"]
    if profile_file is not None:
        profile = CitizenProfile.model_validate_json(profile_file.read_text())
    else:
        profile = citizen(seed, index)
        if nik is not None:
            try:
                info = parse_nik(nik)
            except InvalidNik as error:
                raise typer.BadParameter(str(error), param_hint="--nik") from None
            profile = CitizenProfile.model_validate(
                {
                    **profile.model_dump(),
                    "nik": nik,
                    "date_of_birth": info.birth_date,
                    "sex": info.sex,
                }
            )
    token = mint_credential(
        key,
        kid=kid,
        issuer=issuer,
        purpose=purpose,
        audience=audience,
        profile=profile,
        lifetime=dt.timedelta(seconds=lifetime),
    )
    if show_profile:
        typer.echo(profile.model_dump_json(indent=2), err=True)
    typer.echo(token)
