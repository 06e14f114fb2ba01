"""The generated dashboard files: thirteen in tier folders, byte-identical builds, ``check`` against the committed tree,
provisioning, and the docs' list. Builds go to pytest's tmp_path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dashboards import cli
from dashboards.targets import DATASOURCE_UID
from tests.dashboards.helpers import COMMITTED, DATASOURCES, EXPECTED_FILES, tier_of
from tests.support import ROOT


def test_thirteen_dashboards_in_tier_folders(tmp_path, dashboards):
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert files == EXPECTED_FILES
    for rel in EXPECTED_FILES:
        data = json.loads((tmp_path / rel).read_text())
        assert data["uid"] == Path(rel).stem
        folder = rel.split("/")[0]
        assert folder == (tier_of(data["uid"]) or "overview")
    assert len(dashboards) == 13


def test_committed_tree_has_exactly_the_generated_files():
    files = {str(p.relative_to(COMMITTED)) for p in COMMITTED.rglob("*.json")}
    assert files == EXPECTED_FILES


def test_titles_tags_and_schema(dashboards):
    for uid, d in dashboards.items():
        tier = tier_of(uid)
        if tier is None:
            assert d["title"] == "Clary Overview"
            assert d["tags"] == ["clary", "overview"]
        else:
            kind = uid.split("-")[2]
            assert d["title"] == f"Clary {tier.capitalize()} - {kind.capitalize()}"
            assert d["tags"] == ["clary", tier, kind]
        assert d["schemaVersion"] >= 36, uid
        assert d["description"], uid
        assert d["rows"] == [], f"{uid}: legacy rows"


def test_build_is_byte_identical_across_runs(tmp_path, rendered):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["build", "--out", str(a)]) == 0
    assert cli.main(["build", "--out", str(b)]) == 0
    for rel in EXPECTED_FILES:
        first = (a / rel).read_bytes()
        assert first == (b / rel).read_bytes(), rel
        assert first == rendered[rel].encode()
        data = json.loads(first)
        assert first.decode() == json.dumps(data, sort_keys=True, indent=2) + "\n", f"{rel}: keys not sorted"
    # A second, separate interpreter produces the same bytes (no hash-seed dependence).
    c = tmp_path / "c"
    subprocess.run([sys.executable, "-m", "dashboards.cli", "build", "--out", str(c)], check=True,
                   cwd=ROOT, capture_output=True, env={"PYTHONHASHSEED": "12345", "PATH": ""})
    for rel in EXPECTED_FILES:
        assert (c / rel).read_bytes() == (a / rel).read_bytes(), rel


def _check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboards.cli", "check", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_check_passes_on_the_committed_tree():
    result = _check(COMMITTED)
    assert result.returncode == 0, result.stderr
    assert "13 dashboards up to date" in result.stdout


def test_check_fails_naming_a_tampered_file(tmp_path):
    copy = tmp_path / "dashboards"
    shutil.copytree(COMMITTED, copy)
    assert _check(copy).returncode == 0
    victim = copy / "standard" / "clary-standard-license.json"
    data = json.loads(victim.read_text())
    data["panels"][1]["title"] = "Hand-edited"
    victim.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    result = _check(copy)
    assert result.returncode == 1
    assert str(victim) in result.stderr
    assert "Hand-edited" in result.stderr  # the diff excerpt
    assert "clary-lite" not in result.stderr  # only the tampered file is named


def test_check_fails_on_missing_and_stale_files(tmp_path):
    copy = tmp_path / "dashboards"
    shutil.copytree(COMMITTED, copy)
    (copy / "lite" / "clary-lite-feedback.json").unlink()
    (copy / "overview" / "old-dashboard.json").write_text("{}\n")
    result = _check(copy)
    assert result.returncode == 1
    assert "clary-lite-feedback.json: missing" in result.stderr
    assert "old-dashboard.json: not generated" in result.stderr
    # build repairs both
    assert cli.main(["build", "--out", str(copy)]) == 0
    assert not (copy / "overview" / "old-dashboard.json").exists()
    assert _check(copy).returncode == 0


def test_build_leaves_other_files_alone(tmp_path):
    (tmp_path / "clary.yaml").write_text("keep: me\n")
    (tmp_path / "lite").mkdir()
    (tmp_path / "lite" / "README.txt").write_text("keep\n")
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "clary.yaml").read_text() == "keep: me\n"
    assert (tmp_path / "lite" / "README.txt").exists()


def test_check_fails_after_a_code_change_that_alters_a_panel(monkeypatch, capsys):
    """The CI guard works in the direction that matters: code moved, JSON did not."""
    from dashboards import cli, feedback

    assert cli.main(["check", "--out", str(COMMITTED)]) == 0
    original = feedback.submissions_row

    def altered(tier):
        row = original(tier)
        row.panels[0].title = "Submissions (renamed in code)"
        return row

    monkeypatch.setattr(feedback, "submissions_row", altered)
    capsys.readouterr()
    assert cli.main(["check", "--out", str(COMMITTED)]) == 1
    err = capsys.readouterr().err
    for tier in ("lite", "standard", "professional"):
        assert f"clary-{tier}-feedback.json" in err
    assert "clary-lite-usage.json" not in err


def test_datasource_provisioning_matches_dashboards(dashboards):
    files = sorted(DATASOURCES.glob("*.y*ml"))
    assert files
    sources = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    (prom,) = [ds for ds in sources if ds["type"] == "prometheus"]
    assert prom["uid"] == DATASOURCE_UID
    assert prom["access"] == "proxy" and prom["url"].startswith("http")
    assert prom["jsonData"]["timeInterval"]
    for d in dashboards.values():
        assert d["templating"]["list"][0]["current"]["value"] == prom["uid"]


def test_dashboard_provider_uses_folders_from_files():
    config = yaml.safe_load((COMMITTED / "clary.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["foldersFromFilesStructure"] is True
    # Grafana refuses folder/folderUid together with foldersFromFilesStructure.
    assert "folder" not in provider and "folderUid" not in provider
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    for folder in ("lite", "standard", "professional", "overview"):
        assert (COMMITTED / folder).is_dir()


def test_docs_list_every_dashboard(dashboards):
    readme = (ROOT / "docs" / "dashboards.md").read_text()
    for rel in EXPECTED_FILES:
        uid = Path(rel).stem
        assert f"| `{uid}` | `{rel}` |" in readme, f"docs/dashboards.md does not list {uid}"
    assert "clary-dashboards build" in readme and "clary-dashboards check" in readme
