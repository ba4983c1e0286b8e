"""Installs mmgc: ``pip install -e .`` (add ``[detection]``, ``[classification]`` or ``[all]``)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list:
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


def read_version() -> str:
    namespace: dict = {}
    exec((HERE / 'mmgc' / 'version.py').read_text(), namespace)
    return namespace['__version__']


setup(
    name='mmgc',
    version=read_version(),
    description='Gradient Centralization for mmengine, mmdet and mmpretrain',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(include=['mmgc', 'mmgc.*']),
    package_data={'mmgc.ops': ['csrc/*.cpp', 'csrc/*.h']},
    python_requires='>=3.8',
    install_requires=read_requirements('runtime'),
    extras_require={
        'detection': read_requirements('detection'),
        'classification': read_requirements('classification'),
        'tests': read_requirements('tests'),
        'all': read_requirements('detection') + read_requirements('classification'),
    },
    zip_safe=False,
)
