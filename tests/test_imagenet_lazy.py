"""torchvision is imported only when an ImageNet network is built (issue 25: the import alone costs a process
~170 MB and ~1000 modules): the MNIST path of the CLI's engine and of every dashboard page never imports it,
and the stored table of classifiers and weight files that lets the pickers list them is torchvision's."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torchvision

from core import config
from core.models import imagenet, torchvision_weights
from core.provenance import versions


def module_loaded(script: str, module: str = "torchvision") -> list[bool]:
    """In a fresh interpreter running `script`, whether `module` was in sys.modules at each `loaded()`."""
    code = f"import sys\nloaded = lambda: print({module!r} in sys.modules)\n" + textwrap.dedent(script)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line == "True" for line in proc.stdout.split() if line in ("True", "False")]


@pytest.mark.slow
def test_the_mnist_path_of_the_engine_never_imports_torchvision():
    """Until an ImageNet network is built: then it is (the check can fail)."""
    assert module_loaded(
        """
        import core.cli, core.lab, core.certify, core.smoothing, core.experiments.table5
        from core import models as zoo
        from core.data import load_mnist
        from core.evaluation import leaderboard
        from core.provenance import versions

        statuses = {name: zoo.model_status(name) for name in zoo.list_models()}
        assert statuses["mobilenet_v2"] != "missing" and zoo.get_spec("alexnet").dataset == "imagenet"
        zoo.load("fc100-100-10", "cpu")(load_mnist("test").images[:8])
        versions()
        loaded()
        zoo.load("mobilenet_v2", "cpu")
        loaded()
        """
    ) == [False, True]


@pytest.mark.slow
def test_every_dashboard_page_renders_without_importing_torchvision():
    """Each page in turn, as the sidebar opens them, with its default (MNIST) model; an attack run too."""
    assert module_loaded(
        """
        from pathlib import Path
        from streamlit.testing.v1 import AppTest

        views = Path("dashboard/views").resolve()
        at = AppTest.from_file(str(views.parent / "app.py"), default_timeout=300).run()
        for page in sorted(views.glob("*.py")):
            at.switch_page(f"views/{page.name}").run()
            assert not at.exception, (page.name, [e.value for e in at.exception])
        lab = AppTest.from_file(str(views / "attack_lab.py"), default_timeout=300).run()
        lab.button(key="lab_go").click().run()
        assert not lab.exception and lab.session_state["lab_run"]["outcome"].result.success.any()
        loaded()
        """
    ) == [False]


@pytest.mark.slow
def test_no_page_imports_scipy_stats_and_the_home_page_no_scipy():
    """scipy.stats (~60 MB) is imported by no page: the statistics are core.stats, on scipy.special, which is
    for the pages that score (the Direction Lab, the smoothing certificates). The model picker on every page
    saves uploads through core.units, whose package once re-exported the scores (issue 25); the Direction Lab
    then imports scipy.special (the check can fail)."""
    assert module_loaded(
        """
        from pathlib import Path
        from streamlit.testing.v1 import AppTest

        stats_loaded = lambda: print("scipy.stats" in sys.modules)
        at = AppTest.from_file(str(Path("dashboard/app.py").resolve()), default_timeout=300).run()
        assert not at.exception, [e.value for e in at.exception]
        loaded()
        stats_loaded()
        at.switch_page("views/unit_explorer.py").run()
        assert not at.exception, [e.value for e in at.exception]
        loaded()
        stats_loaded()
        """,
        module="scipy.special",
    ) == [False, False, True, False]


def test_stored_classifier_table_is_the_installed_torchvisions():
    """The copy in core/models/torchvision_weights.py is used only for the torchvision release it was taken
    from; any other release is asked directly (correct, but paying the import)."""
    theirs = imagenet.weight_files_from_torchvision()
    if torchvision.__version__.split("+")[0] != torchvision_weights.VERSION:
        assert imagenet._weight_files() == theirs
        pytest.skip(f"torchvision {torchvision.__version__}: table of {torchvision_weights.VERSION} unused")
    table = "\n".join(f"    {name!r}: {files!r}," for name, files in theirs.items())
    assert torchvision_weights.WEIGHT_FILES == theirs, f"paste into torchvision_weights.py:\n{table}"
    assert imagenet._weight_files() is torchvision_weights.WEIGHT_FILES


def test_recorded_torchvision_version_is_its_own_without_importing_it():
    assert versions()["torchvision"] == torchvision.__version__
