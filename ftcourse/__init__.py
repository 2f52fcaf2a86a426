"""ftcourse: a hands-on course on fine-tuning and transferability.

The notebooks tell the story; this package holds the mechanisms they use, one module per idea. The README's table
"The library" lists every module with what it holds, layer by layer (``tests/test_structure.py`` checks that table
against the imports).
"""

__version__ = "0.4.0"
