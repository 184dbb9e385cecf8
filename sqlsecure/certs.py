"""Test certificates: a federation CA, one certificate per party (or actor), and what `sqlsecure serve` needs.

`init_certs(directory, names)` writes `ca.pem` / `ca.key` (or reuses them if the directory has them)
and, per name, `NAME.pem` / `NAME.key` (ECDSA P-256). Each party certificate names the party in its
subject common name and in a DNS subject alternative name (peers check both: the TLS hostname a client
verifies is the peer's name), with 127.0.0.1 and localhost as well, and is usable for TLS server and
client authentication. `server_certificate` makes the Flight SQL endpoint's `server.pem` / `server.key`
(server authentication only, for the host names clients connect to) and `write_users` its users file.
`merge_sections` adds the network keys to an existing federation file in place.

These are for local trials and tests: a real federation's CA is run by whoever the parties trust
to admit members, and each party keeps its private key to itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sqlsecure.errors import ConfigError

VALID_DAYS = 30


def _write_key(path: Path, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)


def certificate_authority(directory: Path, ca_name: str = "sqlsecure test CA"):
    """The directory's CA (certificate, key): the one there if `ca.pem` and `ca.key` exist, else a new one,
    so that running init-certs again (say, for a server certificate) keeps the parties' certificates valid."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{key_path}: not an unencrypted PEM private key: {exc}") from None
        return load_certificate(cert_path), key
    start, end = _validity()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, ca_key)
    return ca_cert, ca_key


def _subject_names(hosts) -> list[x509.GeneralName]:
    """DNS names and IP addresses, as a certificate's subject alternative names."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _issue(directory: Path, name: str, common_name: str, hosts, usages, ca) -> Path:
    """A key and a certificate `NAME.pem` signed by the CA, for `hosts`, with the extended key `usages`."""
    ca_cert, ca_key = ca
    start, end = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / f"{name}.key", key)
    return path


def init_certs(directory: str | Path, names: list[str], *, ca_name: str = "sqlsecure test CA") -> dict[str, Path]:
    """A CA (reused if present) and a certificate + key per name in `directory`; returns {name: certificate}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = certificate_authority(directory, ca_name)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return {name: _issue(directory, name, name, [name, "localhost", "127.0.0.1"], usages, ca) for name in names}


SERVER = "server"  # server.pem / server.key: the certificate of `sqlsecure serve`
USERS = "users.txt"  # its users file


def server_certificate(directory: str | Path, hosts: list[str]) -> Path:
    """`server.pem` / `server.key` for `sqlsecure serve --tls-cert/--tls-key`, valid for `hosts` (the names
    and addresses clients connect to), signed by the directory's CA (which clients are given)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _issue(directory, SERVER, hosts[0], hosts, [ExtendedKeyUsageOID.SERVER_AUTH],
                  certificate_authority(directory))


def write_users(path: str | Path, users: list[str]) -> dict[str, str]:
    """Add each user missing from the users file (`user:password` lines, sqlsecure/flight_sql/auth.py) with a
    random password; existing lines are kept. The file is mode 600. Returns the new users' passwords."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else \
        ["# sqlsecure serve --password-file: user:password lines (keep this file private)"]
    present = {line.partition(":")[0].strip() for line in lines if ":" in line and not line.lstrip().startswith("#")}
    added = {user: secrets.token_urlsafe(18) for user in users if user not in present}
    lines += [f"{user}:{password}" for user, password in added.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return added


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a PEM certificate: {exc}") from None


def certificate_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def check_issued_by(cert: x509.Certificate, ca: x509.Certificate, what: str) -> str | None:
    """None if `cert` is signed by `ca` and currently valid, else what is wrong."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        return f"{what} is not issued by the federation CA ({exc or 'bad signature'})"
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return f"{what} is not valid now (valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc})"
    return None


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _section_of(raw: dict, section: str):
    node = raw
    for part in section.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def merge_sections(path: str | Path, sections: dict[str, dict[str, str]]) -> list[str]:
    """Add the keys of `sections` ({"parties.bank": {"address": ...}}) that the federation file lacks, in
    place: after the section's `[header]` line, or as a new section at the end. Keys it has are kept as
    they are, and so are comments and layout. Returns what was added ("parties.bank.address", ...); a
    section the file writes inline (`bank = {...}`) is a ConfigError naming it: add its keys by hand."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot update the federation file: {exc}") from None
    lines, added, appended = text.splitlines(), [], []
    for section, keys in sections.items():
        present = _section_of(raw, section)
        missing = {k: v for k, v in keys.items() if not isinstance(present, dict) or k not in present}
        if not missing:
            continue
        body = [f"{k} = {toml_string(v)}" for k, v in missing.items()]
        added += [f"{section}.{k}" for k in missing]
        header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, section.split("."))) + r"\s*\]\s*(#.*)?$")
        at = next((i for i, line in enumerate(lines) if header.match(line)), None)
        if at is None:  # no such section, or only its sub-tables ([parties.bank.tables])
            appended += ["", f"[{section}]", *body]
        else:
            lines[at + 1:at + 1] = body
    result = "\n".join(lines + appended) + "\n"
    try:
        tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{path}: cannot add {', '.join(added)} in place (a section written as an inline "
                          "table?): add them by hand; the file is unchanged") from None
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(result, encoding="utf-8")
    os.replace(temporary, path)
    return added
