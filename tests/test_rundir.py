"""rundir.py's table is what the stages write: same files, same record types, same order."""

from __future__ import annotations

from autoif import rundir
from autoif.stages import STAGES, default_stages


def test_the_table_is_what_the_stages_write():
    assert list(rundir.STAGE_NAMES) == list(STAGES)
    for stage in default_stages():
        table = rundir.stage_files(stage.name)
        assert stage.files() == {f.record: f.name for f in table}, stage.name
        assert (table[0].name, table[0].record) == (stage.output, stage.output_type), stage.name


def test_a_file_reads_as_its_record_type(tmp_path):
    rundir.SEEDS.path(tmp_path).write_text('{"id": "s1", "text": "Answer in French.", "source": "seed"}\n')
    (seed,) = rundir.SEEDS.read(tmp_path)
    assert isinstance(seed, rundir.SEEDS.record) and seed.text == "Answer in French."
    assert rundir.SEEDS.exists(tmp_path) and not rundir.SFT.exists(tmp_path)
