"""scripts/get_data.py (`make data`): its decisions with the machine faked (no real apt or network in tests)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from tvlars.data import register_dataset
from tvlars.data.fashion_mnist import write_fake_fashion_mnist
from tvlars.errors import UserError

INSTALL = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
UPDATE = ["apt-get", "update", "-q"]


@pytest.fixture
def get_data(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    import get_data

    return get_data


class FakeMachine:
    """apt-get that installs the package into ``system`` (after an update, if ``stale``); a download that writes
    the files into ``<root>/FashionMNIST/raw`` (or fails without ``internet``). Records what was called."""

    def __init__(self, system: Path, *, is_root: bool = True, has_apt: bool = True, apt_works: bool = True,
                 stale: bool = False, internet: bool = True) -> None:
        self.system, self.is_root, self.has_apt = system, is_root, has_apt
        self.apt_works, self.stale, self.internet = apt_works, stale, internet
        self.calls: list[list[str]] = []

    def run(self, command: list[str]) -> int:
        self.calls.append(command)
        if command == UPDATE:
            self.stale = False
            return 0
        if command == INSTALL and self.apt_works and not self.stale:
            write_fake_fashion_mnist(self.system.parent.parent)  # writes <system>: .../FashionMNIST/raw
            return 0
        return 100

    def download(self, name: str, root: Path, **loader_args: str) -> None:
        self.calls.append(["download", name, *loader_args.values()])
        if not self.internet:
            raise OSError("<urlopen error [Errno -2] Name or service not known>")
        write_fake_fashion_mnist(root)


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, system dir), both empty."""
    return tmp_path / "data", tmp_path / "system-root" / "FashionMNIST" / "raw"


def test_present_system_copy_is_reported_and_nothing_runs(get_data, paths) -> None:
    root, system = paths
    write_fake_fashion_mnist(system.parent.parent)
    machine = FakeMachine(system)
    assert get_data.get_fashion_mnist(root, machine, system) == system and machine.calls == []


def test_present_download_folder_is_reported(get_data, paths) -> None:
    root, system = paths
    write_fake_fashion_mnist(root)
    machine = FakeMachine(system)
    assert get_data.get_fashion_mnist(root, machine, system) == root / "FashionMNIST" / "raw"
    assert machine.calls == []


@pytest.mark.parametrize(("stale", "calls"), [(False, [INSTALL]), (True, [INSTALL, UPDATE, INSTALL])])
def test_root_with_apt_installs_the_package_updating_first_if_needed(get_data, paths, stale: bool, calls) -> None:
    root, system = paths
    machine = FakeMachine(system, stale=stale)
    assert get_data.get_fashion_mnist(root, machine, system) == system and machine.calls == calls


@pytest.mark.parametrize("machine_kwargs", [{"apt_works": False}, {"is_root": False}, {"has_apt": False}])
def test_without_a_working_apt_it_downloads(get_data, paths, machine_kwargs) -> None:
    root, system = paths
    machine = FakeMachine(system, **machine_kwargs)
    assert get_data.get_fashion_mnist(root, machine, system) == root / "FashionMNIST" / "raw"
    apt_calls = [INSTALL, UPDATE, INSTALL] if machine_kwargs == {"apt_works": False} else []
    assert machine.calls == [*apt_calls, ["download", "fashion_mnist", str(system)]]


@pytest.mark.parametrize(("machine_kwargs", "why"), [
    ({"is_root": False}, "apt-get needs root"),
    ({"has_apt": False}, "no apt-get"),
    ({"apt_works": False}, "apt-get install dataset-fashion-mnist did not provide"),
])
def test_nothing_works_one_error_line_with_the_commands(get_data, paths, machine_kwargs, why: str) -> None:
    root, system = paths
    with pytest.raises(UserError) as err:
        get_data.get_fashion_mnist(root, FakeMachine(system, internet=False, **machine_kwargs), system)
    message = str(err.value)
    assert "\n" not in message and why in message and "the download failed (OSError: <urlopen error" in message
    assert "`sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist`" in message
    assert message.endswith(f"into {root / 'FashionMNIST' / 'raw'}") and "t10k-labels-idx1-ubyte.gz" in message


def test_damaged_present_files_are_reported_with_their_repair(get_data, paths) -> None:
    root, system = paths
    write_fake_fashion_mnist(root)
    labels = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(UserError, match=f"{labels} is damaged .*delete"):
        get_data.get_fashion_mnist(root, FakeMachine(system), system)


def test_main_exit_codes_and_lines(get_data, paths, capsys: pytest.CaptureFixture[str]) -> None:
    root, system = paths
    args = ["--root", str(root), "--system-dir", str(system)]
    assert get_data.main(args, FakeMachine(system, is_root=False, internet=False)) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith(f"error: Fashion-MNIST is neither in {system}")
    assert get_data.main(args, FakeMachine(system)) == 0  # no dataset named: fashion_mnist, what `make test` needs
    assert capsys.readouterr().out == f"fashion_mnist: present {system}\n"


def test_downloadable_datasets_are_downloaded_others_say_how_to_get_them(get_data, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tvlars.data.registry.DATASETS", {})

    @register_dataset("toy", train_size=1, write_fake=lambda root, n_train, n_test: {})
    def load_toy(root: str, download: bool = False) -> None:
        if download:
            (Path(root) / "toy").mkdir(parents=True)
        if not (Path(root) / "toy").is_dir():
            raise UserError(f"{root}/toy not found; set dataset.download=true")

    @register_dataset("manual", train_size=1, write_fake=lambda root, n_train, n_test: {})
    def load_manual(root: str) -> None:
        raise UserError(f"{root}/manual not found; unzip manual.zip into {root}")

    class Offline:
        def download(self, name: str, root: Path, **loader_args: str) -> None:
            raise OSError("no network")

    with pytest.raises(UserError, match=r"toy could not be downloaded into .* \(OSError: no network\); on a machine"):
        get_data.get_dataset("toy", tmp_path, Offline())
    assert get_data.get_dataset("toy", tmp_path, get_data.Machine()) == f"under {tmp_path} (downloaded)"
    assert get_data.get_dataset("toy", tmp_path, Offline()) == f"under {tmp_path}"
    with pytest.raises(UserError, match="manual not found; unzip manual.zip"):
        get_data.get_dataset("manual", tmp_path, get_data.Machine())


@pytest.mark.parametrize(("table", "datasets"), [("fmnist-mini", ["fashion_mnist"]), ("cifar10-mini", ["cifar10"])])
def test_table_datasets_come_from_the_composed_runs(get_data, table: str, datasets: list[str]) -> None:
    assert get_data.table_datasets(table) == datasets


def test_smoke_profile_needs_no_data(get_data, capsys: pytest.CaptureFixture[str]) -> None:
    assert get_data.main(["--table", "cifar10", "--profile", "smoke", "--root", "/nonexistent"]) == 0
    assert "nothing to get" in capsys.readouterr().out
