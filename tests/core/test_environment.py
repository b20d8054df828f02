from __future__ import annotations

import pytest

from airflow_provider_mltrain import Environment, PythonSection
from airflow_provider_mltrain.core.environment import (
    DockerSection,
    EnvironmentNotFound,
    InvalidEnvironment,
    curated_environments,
    resolve_environment,
)


def env(requirements=(), **kwargs) -> Environment:
    return Environment(python=PythonSection(requirements=list(requirements)), **kwargs)


def test_hash_ignores_name_version_and_variables():
    a = env(["six==1.17.0"], name="a", version="1", environment_variables={"X": "1"})
    b = env(["six==1.17.0"], name="b", version="7", environment_variables={"Y": "2"})
    assert a.content_hash() == b.content_hash()


def test_hash_normalizes_requirements():
    a = env(["Six == 1.17.0", "requests>=2", "# a comment", ""])
    b = env(["requests >= 2  # inline comment", "six==1.17.0"])
    assert a.requirement_lines() == ["requests>=2", "six==1.17.0"]
    assert a.content_hash() == b.content_hash()


def test_hash_changes_with_what_changes_the_build(tmp_path):
    base = env(["six==1.17.0"])
    assert env(["six==1.16.0"]).content_hash() != base.content_hash()
    with_version = env(["six==1.17.0"])
    with_version.python.python_version = "3.11"
    assert with_version.content_hash() != base.content_hash()
    assert (
        env(["six==1.17.0"], docker=DockerSection(base_image="img:1")).content_hash() != base.content_hash()
    )
    (tmp_path / "Dockerfile").write_text("FROM a\n")
    with_file = env(["six==1.17.0"], docker=DockerSection(dockerfile="Dockerfile"), base_dir=str(tmp_path))
    first = with_file.content_hash()
    (tmp_path / "Dockerfile").write_text("FROM b\n")
    assert with_file.content_hash() != first


def test_requirements_file_contents_are_hashed_including_includes(tmp_path):
    (tmp_path / "base.txt").write_text("six==1.17.0\n")
    (tmp_path / "requirements.txt").write_text("-r base.txt\nrequests==2.32.3\n")
    e = Environment.from_pip_requirements("reqs", tmp_path / "requirements.txt")
    assert e.requirement_lines() == ["requests==2.32.3", "six==1.17.0"]
    first = e.content_hash()
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    assert e.content_hash() != first


def test_bad_requirement_line_names_its_origin(tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.17.0\nnot a requirement!!\n")
    with pytest.raises(InvalidEnvironment, match=r"requirements.txt:2: 'not a requirement!!'"):
        Environment.from_pip_requirements("reqs", tmp_path / "requirements.txt")


def test_managed_is_inferred():
    assert not Environment().managed
    assert env(["six"]).managed
    assert Environment(python=PythonSection(python_version="3.11")).managed
    assert Environment(python=PythonSection(user_managed_dependencies=False)).managed
    assert not Environment(python=PythonSection(requirements=["six"], user_managed_dependencies=True)).managed


def test_unpinned():
    assert env(["six==1.17.0", "requests>=2", "numpy", "torch==2.*"]).unpinned() == [
        "numpy",
        "requests",
        "torch",
    ]


def test_yaml_round_trip(tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    path = tmp_path / "env.yaml"
    path.write_text(
        "name: train-env\nversion: '3'\npython:\n  requirements_file: requirements.txt\n"
        "  python_version: '3.11'\nenvironment_variables:\n  OMP_NUM_THREADS: 1\n"
    )
    e = Environment.from_yaml(path)
    assert e.name == "train-env" and e.version == "3"
    assert e.environment_variables == {"OMP_NUM_THREADS": "1"}
    assert e.requirement_lines() == ["six==1.17.0"]
    out = tmp_path / "out" / "env.yaml"
    out.parent.mkdir()
    e.to_yaml(out)
    (out.parent / "requirements.txt").write_text("six==1.17.0\n")
    assert Environment.from_yaml(out).content_hash() == e.content_hash()


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("name: x\npython:\n  requirements: [six\n  other: 1\n")
    with pytest.raises(InvalidEnvironment, match=r"env\.yaml:\d+:\d+: invalid YAML"):
        Environment.from_yaml(path)


def test_unknown_keys_are_named(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("name: x\npython:\n  requirement: [six]\nconda: {}\n")
    with pytest.raises(InvalidEnvironment, match=r"unknown key 'conda'"):
        Environment.from_yaml(path)
    path.write_text("name: x\npython:\n  requirement: [six]\n")
    with pytest.raises(InvalidEnvironment, match=r"unknown key 'python.requirement'"):
        Environment.from_yaml(path)


def test_conda_file_python_and_pip_entries(tmp_path):
    path = tmp_path / "environment.yml"
    path.write_text(
        "name: conda-env\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n"
        "  - pip:\n    - six==1.17.0\n"
    )
    e = Environment.from_yaml(path)
    assert e.name == "conda-env" and e.python.python_version == "3.11"
    assert e.requirement_lines() == ["six==1.17.0"]
    renamed = Environment.from_conda_specification("renamed", path)  # Azure ML's name for it
    assert renamed.name == "renamed" and renamed.content_hash() == e.content_hash()


def test_conda_only_packages_are_refused_by_name(tmp_path):
    path = tmp_path / "environment.yml"
    path.write_text("dependencies:\n  - python=3.11\n  - numpy=1.26\n  - conda-forge::cudatoolkit\n  - pip\n")
    with pytest.raises(InvalidEnvironment, match=r"numpy=1\.26, conda-forge::cudatoolkit") as err:
        Environment.from_yaml(path)
    assert "pip:" in str(err.value)


def test_registry_versions(workspace):
    first = env(["six==1.17.0"], name="train").register(workspace)
    assert first.version == "1"
    assert env(["six==1.17.0"], name="train").register(workspace).version == "1"
    assert env(["six==1.16.0"], name="train").register(workspace).version == "2"
    assert Environment.get(workspace, "train").requirement_lines() == ["six==1.16.0"]
    assert Environment.get(workspace, "train", "1").requirement_lines() == ["six==1.17.0"]
    listed = Environment.list(workspace)
    assert {"train", "mltrain-minimal", "mltrain-sklearn"} <= set(listed)
    assert listed["train"].version == "2"
    with pytest.raises(EnvironmentNotFound, match="no version '9'"):
        Environment.get(workspace, "train", "9")


def test_registered_spec_is_self_contained(workspace, tmp_path):
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    Environment.from_pip_requirements("from-file", tmp_path / "requirements.txt").register(workspace)
    (tmp_path / "requirements.txt").unlink()
    assert Environment.get(workspace, "from-file").requirement_lines() == ["six==1.17.0"]


def test_curated_names_are_reserved(workspace):
    with pytest.raises(InvalidEnvironment, match="reserved"):
        env(["six"], name="mltrain-mine").register(workspace)


def test_curated_environments_ship_with_the_package(workspace):
    curated = curated_environments()
    assert {"mltrain-minimal", "mltrain-sklearn"} <= set(curated)
    assert curated["mltrain-minimal"].managed and curated["mltrain-minimal"].requirement_lines() == []
    assert not curated["mltrain-sklearn"].unpinned()
    assert resolve_environment("mltrain-sklearn", workspace).name == "mltrain-sklearn"


def test_unknown_name_lists_close_matches(workspace):
    env(["six"], name="training").register(workspace)
    with pytest.raises(EnvironmentNotFound, match="Did you mean 'training'"):
        resolve_environment("trainig", workspace)


def test_yaml_path_is_found_next_to_the_script(workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "env.yaml").write_text("python:\n  requirements: [six==1.17.0]\n")
    e = resolve_environment("env.yaml", workspace, src)
    assert e.requirement_lines() == ["six==1.17.0"] and e.name == "env"
    with pytest.raises(InvalidEnvironment, match="not found"):
        resolve_environment("missing.yaml", workspace, src)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "has space"}, "name"),
        ({"environment_variables": {"A=B": "1"}}, "variable name"),
        ({"python": PythonSection(python_version="2.7")}, "python_version"),
        (
            {
                "python": PythonSection(
                    python_version="3.11",
                    interpreter_path="/usr/bin/python3",
                    user_managed_dependencies=False,
                )
            },
            "not both",
        ),
    ],
)
def test_bad_specs(kwargs, match):
    with pytest.raises(InvalidEnvironment, match=match):
        Environment(**kwargs).validate()


def test_secret_looking_variables_are_masked_in_the_record():
    e = Environment(
        environment_variables={"WANDB_API_KEY": "abc", "HF_TOKEN": "t", "DB_PASSWORD": "p", "EPOCHS": "3"}
    )
    assert e.recordable()["environment_variables"] == {
        "WANDB_API_KEY": "***",
        "HF_TOKEN": "***",
        "DB_PASSWORD": "***",
        "EPOCHS": "3",
    }
    assert e.environment_variables["HF_TOKEN"] == "t"


def test_unquoted_python_version_in_yaml_is_caught(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("python:\n  python_version: 3.10\n  requirements: [six]\n")
    with pytest.raises(InvalidEnvironment, match="write it in quotes"):
        Environment.from_yaml(path)


def test_python_older_than_39_is_refused():
    with pytest.raises(InvalidEnvironment, match=r"3\.9 or newer"):
        Environment(python=PythonSection(python_version="3.8")).validate()


def test_constraints_and_editables_are_made_absolute_and_hashed(tmp_path):
    (tmp_path / "constraints.txt").write_text("six==1.17.0\n")
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\n-e ./pkg\nsix\n")
    e = Environment.from_pip_requirements("c", tmp_path / "requirements.txt")
    lines = e.requirement_lines()
    assert lines[0].startswith(f"-c {tmp_path / 'constraints.txt'} #sha256=")
    assert lines[1] == f"-e {tmp_path / 'pkg'}"
    first = e.content_hash()
    (tmp_path / "constraints.txt").write_text("six==1.16.0\n")
    assert e.content_hash() != first


def test_registering_changed_variables_makes_a_new_version(workspace):
    assert env(["six==1.17.0"], name="v", environment_variables={"A": "1"}).register(workspace).version == "1"
    assert env(["six==1.17.0"], name="v", environment_variables={"A": "2"}).register(workspace).version == "2"
    assert Environment.get(workspace, "v").environment_variables == {"A": "2"}


def test_index_credentials_are_masked_in_the_record():
    e = env(["--extra-index-url https://user:s3cret@pkgs.example.invalid/simple", "six==1.17.0"])
    assert "s3cret" not in str(e.recordable())
    assert "https://***@pkgs.example.invalid/simple" in e.recordable()["python"]["requirements"][0]


def test_managed_environment_from_a_given_python_hashes_it():
    a = Environment(python=PythonSection(requirements=["six"], interpreter_path="/usr/bin/python3"))
    b = Environment(python=PythonSection(requirements=["six"]))
    assert a.managed and a.content_hash() != b.content_hash()


def test_variables_are_masked_by_name_and_url_credentials_wherever_shown():
    e = Environment(
        name="masked",
        environment_variables={
            "PGPWD": "pw1",
            "MYSQL_PASSWD": "pw2",
            "DATABASE_URL": "postgresql://app:pw3@db.example.invalid/ml",
            "INDEX": "https://pkgs.example.invalid/simple?token=pw4",
            "EPOCHS": "5",
        },
        python=PythonSection(requirements=["--extra-index-url https://u:p@ss5@pkgs.example.invalid/simple"]),
    )
    recorded = e.recordable()
    assert recorded["environment_variables"] == {
        "PGPWD": "***",
        "MYSQL_PASSWD": "***",
        "DATABASE_URL": "postgresql://***@db.example.invalid/ml",
        "INDEX": "https://pkgs.example.invalid/simple?token=***",
        "EPOCHS": "5",
    }
    # repr is what Airflow's "Rendered Template" page shows of an Environment passed to an operator
    for shown in (str(recorded), repr(e), str(e)):
        for secret in ("pw1", "pw2", "pw3", "pw4", "ss5"):
            assert secret not in shown
    assert e.environment_variables["DATABASE_URL"].endswith("pw3@db.example.invalid/ml")  # the run gets it
