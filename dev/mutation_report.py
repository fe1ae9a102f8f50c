"""Summarise a ``mutmut run``: the score, and every surviving mutant with its reason.

    OMP_NUM_THREADS=1 SSN_SHARED_DATA=../shared/data mutmut run --max-children 2
    python dev/mutation_report.py [--out dev/mutation_survivors.md]

mutmut finds the tests of a mutant by tracing calls in the test process; code that only runs in
subprocesses (the 2-process gradient gather) gets "no tests". ``--run-untraced TEST`` runs each
such mutant with TEST in mutmut's ``mutants/`` copy (``MUTANT_UNDER_TEST`` set, which the
subprocesses inherit) and records the outcome in ``dev/mutation_untraced.tsv``.

Survivors are matched against ``dev/mutation_equivalents.tsv`` (``mutant name<TAB>reason``
per line, maintained by hand): a listed survivor is an *equivalent* mutant (it changes no
observable behaviour; the reason says why); an unlisted one is *unexplained* and needs a sharper
test. The score is killed / (mutants - equivalent). The report lists each survivor's diff.
"""
import argparse
import collections
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
EQUIVALENTS = osp.join(ROOT, 'dev', 'mutation_equivalents.tsv')
UNTRACED = osp.join(ROOT, 'dev', 'mutation_untraced.tsv')
NO_TESTS = 33
# mutmut's exit codes: 0 = the tests passed (survived), 1 = a test failed (killed), others:
# timeouts (-24, SIGXCPU) and crashes, which count as killed; None = not run.
SURVIVED = 0


def read_results(mutants_dir: str) -> dict:
    """mutant name -> exit code, from mutmut's ``.meta`` files."""
    results = {}
    for meta in glob.glob(osp.join(mutants_dir, '**', '*.meta'), recursive=True):
        with open(meta) as f:
            results.update(json.load(f)['exit_code_by_key'])
    if not results:
        sys.exit(f'no mutmut results under {mutants_dir}; run `mutmut run` first')
    return results


def read_equivalents(path: str) -> dict:
    reasons = {}
    if osp.isfile(path):
        for line in open(path, encoding='utf-8'):
            if line.strip() and not line.startswith('#'):
                name, reason = line.rstrip('\n').split('\t', 1)
                reasons[name] = reason
    return reasons


def run_untraced(names, test: str, mutants_dir: str) -> dict:
    """name -> exit code of ``pytest TEST`` with the mutant active (non-zero = killed)."""
    outcome = {}
    env = dict(os.environ, PYTHONPATH=mutants_dir, OMP_NUM_THREADS='1')
    for name in names:
        env['MUTANT_UNDER_TEST'] = name
        result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:warnings',
                                 '-p', 'no:cacheprovider', test], cwd=mutants_dir, env=env,
                                capture_output=True)
        outcome[name] = result.returncode
        print(f'{name}: {"killed" if result.returncode else "SURVIVED"}', flush=True)
    with open(UNTRACED, 'w') as f:
        f.write(f'# mutants mutmut found no test for, run with {test}: name<TAB>exit code\n')
        f.writelines(f'{n}\t{c}\n' for n, c in sorted(outcome.items()))
    return outcome


def read_untraced() -> dict:
    if not osp.isfile(UNTRACED):
        return {}
    return {line.split('\t')[0]: int(line.split('\t')[1]) for line in open(UNTRACED)
            if line.strip() and not line.startswith('#')}


def diff_of(name: str) -> str:
    out = subprocess.run(['mutmut', 'show', name], capture_output=True, text=True, cwd=ROOT)
    return '\n'.join(line for line in out.stdout.splitlines()
                     if line.startswith(('-', '+')) and not line.startswith(('---', '+++')))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mutants', default=osp.join(ROOT, 'mutants'))
    parser.add_argument('--out', default=osp.join(ROOT, 'dev', 'mutation_survivors.md'))
    parser.add_argument('--run-untraced', metavar='TEST',
                        help='run the mutants mutmut found no test for with this test file')
    args = parser.parse_args(argv)
    results = read_results(args.mutants)
    untraced = [n for n, code in results.items() if code == NO_TESTS]
    outcome = (run_untraced(untraced, args.run_untraced, args.mutants) if args.run_untraced
               else read_untraced())
    for name in untraced:
        if name in outcome:  # killed: 1; survived: 0, like mutmut's own codes
            results[name] = 1 if outcome[name] else SURVIVED
    reasons = read_equivalents(EQUIVALENTS)
    not_run = [n for n, code in results.items() if code is None or code == NO_TESTS]
    survivors = sorted(n for n, code in results.items() if code == SURVIVED)
    equivalent = [n for n in survivors if n in reasons]
    unexplained = [n for n in survivors if n not in reasons]
    ran = len(results) - len(not_run)
    killed = ran - len(survivors)
    score = 100.0 * killed / max(ran - len(equivalent), 1)
    stale = sorted(set(reasons) - set(survivors))

    per_file = collections.Counter(n.split('.x')[0] for n in results)
    lines = [
        '# Mutation testing results', '',
        f'`mutmut run` + `python dev/mutation_report.py`, {time.strftime("%Y-%m-%d")}. '
        f'{len(results)} mutants in '
        f'{", ".join(f"{k} ({v})" for k, v in sorted(per_file.items()))}.',
        '',
        f'- run: {ran} ({len(untraced)} of them, which mutmut traced to no test because they '
        f'run in subprocesses only, with `--run-untraced`); not run: {len(not_run)}',
        f'- killed: {killed}',
        f'- survived: {len(survivors)} = {len(equivalent)} equivalent (reasons below) + '
        f'{len(unexplained)} unexplained',
        f'- **score: {score:.1f} %** of the non-equivalent mutants killed', '',
    ]
    if stale:
        lines += [f'Listed as equivalent but no longer surviving (remove from the list): '
                  f'{", ".join(stale)}', '']
    for title, names in (('Unexplained survivors (need a sharper test)', unexplained),
                         ('Equivalent survivors', equivalent)):
        lines += [f'## {title}', '']
        for name in names:
            lines += [f'### `{name}`', '']
            if name in reasons:
                lines += [reasons[name], '']
            lines += ['```diff', diff_of(name), '```', '']
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    print(f'score {score:.1f} %: {killed} killed of {ran} run, {len(equivalent)} equivalent, '
          f'{len(unexplained)} unexplained; written to {args.out}')


if __name__ == '__main__':
    main()
