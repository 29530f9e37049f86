"""nbgrader's configuration for the exercise notebooks 06-10 (`make student`, grading).

The course directory is this repository: the instructor versions (with solutions, hidden tests and
the rubrics of the written answers) are the "assignment" `notebooks` (only `NN_ex*.ipynb`), and
`nbgrader generate_assignment notebooks` writes the student versions to `student/notebooks/`.
Submissions go to `submitted/<student>/notebooks/`, autograded copies to `autograded/`, feedback to
`feedback/` (all git-ignored). See the README's "For instructors".
"""

from pathlib import Path

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.source_directory = "."          # the assignment "notebooks" is ./notebooks
c.CourseDirectory.release_directory = "student"   # -> student/notebooks/
c.CourseDirectory.notebook_id = "[0-9][0-9]_ex*"  # the exercise notebooks only, not the chapter's

# Autograding executes the whole notebook. In the `smoke` setting (D2L_SETTING=smoke) every
# exercise notebook runs in well under a minute per cell; in `quick` on a CPU a training cell can
# take several minutes, more than nbgrader's default of 30 s per cell.
c.Execute.timeout = 900
# a kernel that starts on a busy machine can be slow to report (nbgrader's default: 4 s)
c.Execute.iopub_timeout = 60



class ShortTracebacks(Preprocessor):
    """A failed test's error as one line, `AssertionError: <what is wrong>`: the full traceback would
    print the test cell's code around the failing line, hidden tests included."""

    enabled = True  # nbconvert runs only enabled preprocessors

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            for out in cell.get("outputs", []):
                if out.output_type == "error":
                    out.traceback = [f"{out.ename}: {out.evalue}"]
        return cell, resources


# The feedback shows each test's score and message, not the hidden tests' code (nbgrader's default
# feedback shows it, and next year's students could read it): the hidden regions are removed from
# the autograded notebook, and the failed tests' tracebacks shortened, before it becomes HTML.
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ShortTracebacks, CSSHTMLHeaderPreprocessor]

# Collecting: each student hands in `submission-<student id>.zip` (the hand-out's `make submit
# STUDENT=<id>`, the five notebooks); the instructor puts the archives into
# submitted/.archives/notebooks/archive/ and `nbgrader zip_collect notebooks` files each notebook
# under submitted/<student id>/notebooks/ (the archives stay in git-ignored submitted/; the leading
# dot keeps the folder from being taken for a student).
c.ZipCollectApp.downloaded_directory = "submitted/.archives"
c.FileNameCollectorPlugin.named_regexp = (
    r".*/extracted/submission-(?P<student_id>[A-Za-z0-9_.-]+)/(?:.*/)?(?P<file_id>[0-9]{2}_ex[^/]*\.ipynb)$")
