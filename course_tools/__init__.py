"""course_tools: the course's own tools for the AlexNet chapter, beside the book's helpers in
`d2l_local`: settings (`choose_setting`) and results, the models, analyses of layers and filters,
diagrams, variants and recipes, the exercises' helpers, the distributed launcher (`ddp`) and
`make doctor`.

Importing it does nothing else: no prints, no global settings, no downloads.
"""

from course_tools.settings import choose_setting

__all__ = ["choose_setting"]
