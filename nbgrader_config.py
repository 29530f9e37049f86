"""nbgrader's configuration for the exercise notebooks 06-10 (`make student`, grading).

The course directory is this repository: the instructor versions (with solutions) are the
"assignment" `notebooks` (only `NN_ex*.ipynb`), and `nbgrader generate_assignment notebooks` writes
the student versions to `student/notebooks/`. See the README's "For instructors".
"""

from pathlib import Path

c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.source_directory = "."          # the assignment "notebooks" is ./notebooks
c.CourseDirectory.release_directory = "student"   # -> student/notebooks/
c.CourseDirectory.notebook_id = "[0-9][0-9]_ex*"  # the exercise notebooks only, not the chapter's

# Autograding executes the whole notebook. In the `smoke` setting (D2L_SETTING=smoke) every
# exercise notebook runs in well under a minute per cell; in `quick` on a CPU a training cell can
# take several minutes, more than nbgrader's default of 30 s per cell.
c.Execute.timeout = 900
