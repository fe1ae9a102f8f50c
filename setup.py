"""Package metadata for ssn_plugin."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list:
    """Read one requirements file, dropping comments and blank lines."""
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    requirements = []
    for line in (line.strip() for line in lines):
        if line.startswith('-r '):  # an included file
            requirements += read_requirements(line[3:].strip())
        elif line and not line.startswith('#'):
            requirements.append(line)
    return requirements


def read_version() -> str:
    scope: dict = {}
    exec((HERE / 'ssn_plugin' / 'version.py').read_text(), scope)
    return scope['__version__']


setup(
    name='ssn_plugin',
    version=read_version(),
    description='SSN (Decomposing Semantic Shifts for Composed Image Retrieval) '
    'as an OpenMMLab plugin',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['ssn_plugin', 'ssn_plugin.*']),
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt'),
                    'demo': read_requirements('demo.txt'),
                    'export': read_requirements('export.txt'),
                    'serve': read_requirements('serve.txt'),
                    'faiss': read_requirements('faiss.txt'),
                    'milvus': read_requirements('milvus.txt'),
                    'mutation': read_requirements('mutation.txt')},
    license='Apache-2.0',
)
