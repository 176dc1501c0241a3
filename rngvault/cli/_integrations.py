"""import-checkpoint: the RNG states a framework's checkpoint holds, into a store."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

import rngvault
from rngvault.cli._common import (
    example,
    json_option,
    print_json,
    print_table,
    refs,
    say,
    store_options,
    the_store,
)
from rngvault.cli._snapshots import words

KINDS = ("accelerate", "transformers", "lightning", "composer")  # rngvault.integrations._import


@click.command(
    "import-checkpoint",
    epilog=example(
        "rngvault import-checkpoint accelerate ./ckpt/checkpoint_3 alice/resnet50/epoch3",
        "rngvault import-checkpoint transformers ./out/checkpoint-500 alice/bert step500",
        "rngvault import-checkpoint composer ep2-ba400-rank0.pt alice/gpt/ep2 --url ./store",
    ),
)
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("path", type=click.Path(path_type=Path))
@words
@json_option
@store_options
def import_checkpoint(kind: str, path: Path, words: tuple[str, ...], as_json: bool) -> None:
    """Store the RNG states a KIND checkpoint at PATH holds (accelerate's
    random_states_N.pkl, the Trainer's rng_state.pth, Composer's rng entry, the RNG dict a
    Lightning callback saved) as the snapshot SNAPSHOT, one per rank. The files are loaded
    with torch.load(weights_only=True) and a small allowlist: one that needs anything else
    is refused. Prints each rank's generators (--json: a list, one object per rank)."""
    [ref] = refs(words, 1)
    from rngvault.integrations import import_checkpoint as read

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", rngvault.RngVaultWarning)
        snapshots = read(kind, path)
    for warning in caught:
        if issubclass(warning.category, rngvault.RngVaultWarning):
            say(f"rngvault: warning: {warning.message}")
        else:  # another library's: shown as that library would have it shown
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    store = the_store()
    new = []
    try:
        for snapshot in snapshots:
            new.append(store.put(ref.run, ref.name, rngvault.encode(snapshot), snapshot))
        left = store.flush()
    finally:
        store.close()  # what is left waits in the spool on disk, for `rngvault spool flush`
    rows = [
        {
            "rank": s.metadata.rank,
            "world_size": s.metadata.world_size,
            "generators": list(s.states),
            "step": s.metadata.step,
            "epoch": s.metadata.epoch,
            "digest": s.digest,
            "new": created,
        }
        for s, created in zip(snapshots, new, strict=True)
    ]
    if as_json:
        print_json(rows)
    else:
        print_table(
            ["RANK", "GENERATORS", "STEP", "EPOCH", "DIGEST", "STATE"],
            [
                (
                    f"{r['rank']}/{r['world_size']}",
                    ", ".join(r["generators"]),
                    "-" if r["step"] is None else r["step"],
                    "-" if r["epoch"] is None else r["epoch"],
                    r["digest"][:12],
                    "stored" if r["new"] else "already stored (identical)",
                )
                for r in rows
            ],
        )
    where = f"the spool (the server is away; {left} waiting)" if left else store.location
    say(f"imported {len(snapshots)} rank(s) of {kind} checkpoint {path} as {ref} into {where}")


COMMANDS = [import_checkpoint]
