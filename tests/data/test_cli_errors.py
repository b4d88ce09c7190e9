"""The dispatcher turns a verb's refused bundle (BundleError, a ContractError) into one line, exit 1."""

from __future__ import annotations

import sys
import textwrap

from simbridge.data import cli

VERB = textwrap.dedent(
    '''
    from simbridge.deploy.bundle import BundleError

    def add_arguments(parser):
        parser.add_argument("bundle")

    def run(args):
        raise BundleError(f"{args.bundle}/manifest.json: field 'x' is NaN\\nsecond line; re-export it")
    '''
)


def test_bundle_error_from_a_verb_is_one_line_exit_1(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "fake_bundle_verb.py").write_text(VERB)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.VERBS, "fake", cli.Verb("fake_bundle_verb", "raises BundleError"))
    try:
        assert cli.main(["fake", "b"]) == cli.EXIT_FAILED
    finally:
        sys.modules.pop("fake_bundle_verb", None)
    err = capsys.readouterr().err
    assert err == "simbridge fake: b/manifest.json: field 'x' is NaN second line; re-export it\n"
