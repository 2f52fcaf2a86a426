"""The autograder: a security boundary, apart from the course.

No lesson and no learner imports this package. It runs students' notebooks that nobody trusts
(:mod:`~ftcourse.grading.sandbox`, with :mod:`~ftcourse.grading.worker` inside), reads what comes out of them as
bounded data (:mod:`~ftcourse.grading.frames`), and judges it in the grader's own process
(:mod:`~ftcourse.grading.grade`, behind ``ftcourse grade``). Everything here assumes that the other side is
hostile: read it as the part of the course that must not break when a student tries to break it.
"""
