"""lbcore's public surface: a sorted __all__ that names exactly what it exports."""

import lbcore


def test_all_is_sorted_and_names_every_public_export() -> None:
    public = {name for name in vars(lbcore) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(lbcore, name)).__name__ == "module"}
    assert lbcore.__all__ == sorted(lbcore.__all__)
    assert set(lbcore.__all__) == public - modules
