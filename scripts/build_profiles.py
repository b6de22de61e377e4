"""Compile the TOH profiles (FHIR Shorthand) into the JSON committed under fhir_profiles/.

The source is fhir_profiles/fsh/ (a SUSHI project). This script runs SUSHI with snapshot
generation, then copies the StructureDefinitions into fhir_profiles/StructureDefinition/ and the
example instances into fhir_profiles/examples/. The service never runs this: it only reads
the committed JSON, so the runtime needs neither Node nor the network.

SUSHI needs the hl7.fhir.r4.core#4.0.1 package in ~/.fhir/packages. That package is not on
npm, but hl7.fhir.r4.examples#4.0.1 is, and it carries every base definition with snapshots.
`--r4-examples DIR` (an unpacked hl7.fhir.r4.examples package) installs it as r4.core once.

Usage:
    npm install --prefix /tmp/sushi fsh-sushi         # once
    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz
    python scripts/build_profiles.py --sushi /tmp/sushi/node_modules/.bin/sushi \
        --r4-examples ./package

Raises SystemExit with SUSHI's output when SUSHI reports errors.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "fhir_profiles"
FSH_PROJECT = PROFILES / "fsh"
CORE_PACKAGE = Path.home() / ".fhir" / "packages" / "hl7.fhir.r4.core#4.0.1" / "package"


def install_core_from_examples(examples_dir: Path) -> None:
    """Install an unpacked hl7.fhir.r4.examples#4.0.1 as hl7.fhir.r4.core#4.0.1 for SUSHI."""
    if (CORE_PACKAGE / "StructureDefinition-Condition.json").exists():
        return
    shutil.copytree(examples_dir, CORE_PACKAGE, dirs_exist_ok=True)
    manifest_path = CORE_PACKAGE / "package.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(name="hl7.fhir.r4.core", type="fhir.core")
    manifest_path.write_text(json.dumps(manifest, indent=2))


def run_sushi(sushi: str, out_dir: Path) -> Path:
    """Run SUSHI with snapshots into out_dir; return the folder of generated resources."""
    proc = subprocess.run([sushi, "build", "--snapshot", "--out", str(out_dir), str(FSH_PROJECT)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or " 0 Errors" not in proc.stdout:
        raise SystemExit(proc.stdout + proc.stderr)
    return out_dir / "fsh-generated" / "resources"


def write_json(path: Path, resource: dict) -> None:
    """Write one resource as stable, diff-friendly JSON."""
    path.write_text(json.dumps(resource, indent=2, ensure_ascii=False) + "\n")


def copy_outputs(generated: Path) -> list[Path]:
    """Copy the generated resources into fhir_profiles/; return the files written."""
    written = []
    for old in (PROFILES / "StructureDefinition").glob("StructureDefinition-*.json"):
        old.unlink()
    for src in sorted(generated.glob("*.json")):
        resource = json.loads(src.read_text())
        kind = resource["resourceType"]
        folder = "StructureDefinition" if kind == "StructureDefinition" else "examples"
        dest = PROFILES / folder / f"{kind}-{resource['id']}.json"
        write_json(dest, resource)
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sushi", default="sushi", help="the sushi executable")
    parser.add_argument("--r4-examples", type=Path,
                        help="unpacked hl7.fhir.r4.examples#4.0.1 to install as r4.core")
    args = parser.parse_args(argv)
    if args.r4_examples:
        install_core_from_examples(args.r4_examples)
    with tempfile.TemporaryDirectory() as tmp:
        written = copy_outputs(run_sushi(args.sushi, Path(tmp)))
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
