"""Build the stand-in modules that make Elastic's integ-test zip usable for tests.

The zip (``org.elasticsearch.distribution.integ-test-zip``) carries only the server and the
modules transport-netty4, x-pack-core, x-pack-security and (from 9.5) apm. Running it here
showed two gaps that matter to every test, and one that older zips add:

- No ``rest-root`` module: ``GET /`` answers 405, so the clients' ``info()`` and ``ping()``
  fail.
- No ``analysis-common``: x-pack-security cannot create its ``.security`` index (its settings
  name the ``uax_url_email`` tokenizer and the ``pattern_capture`` and ``unique`` filters), so on
  a node with security on, ``POST _security/api_key`` answers 400 "Unknown filter type
  [pattern_capture]" and no API key, native user or role can be stored.
- 9.x zips before 9.5 lack ``modules/apm``; their launcher then stops with "Expected to find
  [apm] module ... Installation is corrupt".

``devtools/es_stub/EsEmbedStubPlugin.java`` fills the first two: a ``GET /``/``HEAD /``
handler that answers from the node's own build and cluster state, and those three analysis
parts built on the Lucene classes already in ``lib/``. It is compiled once per version with
the JDK's ``javac`` against the zip's ``lib/*.jar`` into ``modules/es-embed-stub/`` (a module
is a folder with ``plugin-descriptor.properties`` and the jar holding its class). Everything
else from analysis-common, ingest-common, lang-painless and reindex stays missing; tests that
need them are marked ``full_distribution``.

For a zip without ``modules/apm``, the same jar is installed as ``modules/apm`` with a no-op
plugin class and an empty placeholder agent jar: the launcher only checks that exactly one jar
named like the agent exists there (``elastic-apm-agent-X.Y.Z.jar``, or
``elastic-apm-agent-java8-X.Y.Z.jar`` from 9.5; it is loaded only when APM tracing is
configured), and the server only needs a valid module there. Verified by deleting
``modules/apm`` from a 9.5.4 tree.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

SOURCE = Path(__file__).parent / "es_stub" / "EsEmbedStubPlugin.java"
STUB_MODULE = "es-embed-stub"
STUB_CLASS = "org.esembed.stub.EsEmbedStubPlugin"
NOOP_CLASS = "org.esembed.stub.NoopPlugin"

_DESCRIPTOR = """\
description={description}
version={version}
name={name}
classname={classname}
java.version=21
elasticsearch.version={version}
"""


class StubBuildError(RuntimeError):
    """javac is missing or the stand-in module does not compile against this version."""


def install(home: Path, version: str, java_home: Path) -> None:
    """Add the stand-in modules to an unzipped distribution (idempotent)."""
    modules = home / "modules"
    stub_dir = modules / STUB_MODULE
    needs_apm = not (modules / "apm").exists()
    if stub_dir.exists() and not needs_apm:
        return
    build = Path(tempfile.mkdtemp(prefix="es-embed-stub-"))
    try:
        _install_from(_compile(home, java_home, build), home, version, stub_dir, needs_apm)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _install_from(jar: Path, home: Path, version: str, stub_dir: Path, needs_apm: bool) -> None:
    modules = home / "modules"
    if not stub_dir.exists():
        _write_module(
            stub_dir,
            jar,
            name=STUB_MODULE,
            classname=STUB_CLASS,
            version=version,
            description="es-embed test stand-in: GET / and the analysis parts .security needs",
        )
    if needs_apm:
        apm = _write_module(
            modules / "apm",
            jar,
            name="apm",
            classname=NOOP_CLASS,
            version=version,
            description="es-embed test stand-in for the apm module (does nothing)",
        )
        # An empty but valid jar: the launcher looks for exactly one agent jar by name.
        with zipfile.ZipFile(apm / _agent_jar_name(home), "w"):
            pass


def _agent_jar_name(home: Path) -> str:
    """The agent jar name this launcher accepts: 9.5 wants ``elastic-apm-agent-java8-X.Y.Z.jar``,
    earlier 9.x ``elastic-apm-agent-X.Y.Z.jar`` (read from the pattern in APMJvmOptions)."""
    for jar in (home / "lib" / "tools" / "server-cli").glob("server-cli-*.jar"):
        with zipfile.ZipFile(jar) as zf:
            code = zf.read("org/elasticsearch/server/cli/APMJvmOptions.class")
        if b"elastic-apm-agent-java8-" in code:
            return "elastic-apm-agent-java8-0.0.0.jar"
    return "elastic-apm-agent-0.0.0.jar"


def _compile(home: Path, java_home: Path, build: Path) -> Path:
    """Compile the plugin classes against this distribution's lib/ into build/es-embed-stub.jar."""
    javac = java_home / "bin" / "javac"
    if not javac.exists():
        raise StubBuildError(f"no javac in {java_home}: a full JDK is needed to build the stub")
    classes = build / "classes"
    classes.mkdir()
    noop = build / "NoopPlugin.java"
    noop.write_text(
        "package org.esembed.stub;\n"
        "public class NoopPlugin extends org.elasticsearch.plugins.Plugin {}\n"
    )
    result = subprocess.run(
        [str(javac), "--release", "21", "-nowarn", "-d", str(classes),
         "-cp", str(home / "lib" / "*"), str(SOURCE), str(noop)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise StubBuildError(f"javac failed for {SOURCE.name}:\n{result.stderr[-3000:]}")
    jar = build / "es-embed-stub.jar"
    subprocess.run(
        [str(java_home / "bin" / "jar"), "cf", str(jar), "-C", str(classes), "."],
        check=True, capture_output=True,
    )  # fmt: skip
    return jar


def _write_module(
    target: Path, jar: Path, *, name: str, classname: str, version: str, description: str
) -> Path:
    # Build outside modules/ (same file system) and rename, so a node starting meanwhile
    # never sees a half-written module.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent.parent))
    shutil.copyfile(jar, staging / "es-embed-stub.jar")
    (staging / "plugin-descriptor.properties").write_text(
        _DESCRIPTOR.format(description=description, version=version, name=name, classname=classname)
    )
    staging.chmod(0o755)
    staging.rename(target)
    return target
