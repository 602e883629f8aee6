/*
 * The processing runtime's hot loops in C: which records of a repartition topic a
 * stateful step has applied already (newer_marks), a batch's tumbling windows and late
 * records (tumbling_windows), the rows of a batch's output columns that go to one
 * partition (take_rows), and the elements of a JSON array as orjson wrote it
 * (split_array).
 *
 * Each function has a reference implementation in Python (headwater.processing._marks,
 * _window_columns, _columns, _json_columns);
 * this module is an optional accelerator of exactly that, built when a C compiler is
 * present at install time, and the tests hold the two to the same results. For input it
 * does not take (a header that is not a plain decimal number, a mark past what it keeps
 * in 64-bit halves, rows that are not tuples or lists), a function returns None having
 * changed nothing, and the caller runs the Python version, which gives the same answer
 * or raises the error a user sees.
 */
#define _GNU_SOURCE /* memrchr */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A mark: the source offset (hi) and the record's number among that source's (lo),
 * compared as (hi, lo); the Python value is hi << 32 | lo. */
typedef struct {
    long long hi;
    long long lo;
} mark_t;

static inline int
mark_above(mark_t a, mark_t b)
{
    return a.hi > b.hi || (a.hi == b.hi && a.lo > b.lo);
}

/* Parse `size` ASCII digits (1 to max_digits of them) into *out. Returns 0 for anything
 * else, which the Python version may read differently (signs, spaces, underscores). */
static inline int
parse_digits(const char *data, Py_ssize_t size, int max_digits, long long *out)
{
    if (size < 1 || size > max_digits) {
        return 0;
    }
    long long value = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = data[i];
        if (c < '0' || c > '9') {
            return 0;
        }
        value = value * 10 + (c - '0');
    }
    *out = value;
    return 1;
}

/* A Python mark as (hi, lo) in *out: hi = value >> 32, lo = value & 0xFFFFFFFF. Returns
 * 0 if hi does not fit 62 bits, -1 on a Python error. */
static int
mark_from_object(PyObject *value, mark_t *out)
{
    int overflow = 0;
    long long whole = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (whole == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        return 0;
    }
    out->hi = whole >> 32; /* arithmetic: floors, as Python's >> does */
    out->lo = whole & 0xFFFFFFFFLL;
    return 1;
}

/* The Python value of a mark (hi < 2**31 keeps hi << 32 within 64 bits). */
static PyObject *
mark_to_object(mark_t mark)
{
    if (mark.hi >= -(1LL << 31) && mark.hi < (1LL << 31)) {
        return PyLong_FromLongLong((long long)((unsigned long long)mark.hi << 32) | mark.lo);
    }
    PyObject *hi = PyLong_FromLongLong(mark.hi);
    PyObject *shift = PyLong_FromLong(32);
    PyObject *lo = PyLong_FromLongLong(mark.lo);
    PyObject *shifted = hi && shift ? PyNumber_Lshift(hi, shift) : NULL;
    PyObject *result = shifted && lo ? PyNumber_Or(shifted, lo) : NULL;
    Py_XDECREF(hi);
    Py_XDECREF(shift);
    Py_XDECREF(lo);
    Py_XDECREF(shifted);
    return result;
}

/* The sources seen in one call, with the last mark applied of each: written to the
 * caller's dict only at the end, so that a call that gives up has changed nothing. */
typedef struct {
    PyObject *prefix; /* bytes, owned */
    mark_t last;
} source_t;

typedef struct {
    source_t *items;
    Py_ssize_t count;
    Py_ssize_t capacity;
} sources_t;

static void
sources_clear(sources_t *sources)
{
    for (Py_ssize_t i = 0; i < sources->count; i++) {
        Py_DECREF(sources->items[i].prefix);
    }
    PyMem_Free(sources->items);
}

/* The index of the source whose prefix is data[0:size], added (its last mark read from
 * `applied`, or below every mark) if new. Returns -1 on a Python error, -2 to give up. */
static Py_ssize_t
source_index(sources_t *sources, PyObject *applied, const char *data, Py_ssize_t size)
{
    for (Py_ssize_t i = 0; i < sources->count; i++) {
        PyObject *prefix = sources->items[i].prefix;
        if (PyBytes_GET_SIZE(prefix) == size &&
            memcmp(PyBytes_AS_STRING(prefix), data, (size_t)size) == 0) {
            return i;
        }
    }
    PyObject *prefix = PyBytes_FromStringAndSize(data, size);
    if (prefix == NULL) {
        return -1;
    }
    mark_t last = {-1, 0xFFFFFFFFLL}; /* -1: below every mark */
    PyObject *found = PyDict_GetItemWithError(applied, prefix); /* borrowed */
    if (found != NULL) {
        int ok = mark_from_object(found, &last);
        if (ok != 1) {
            Py_DECREF(prefix);
            return ok == 0 ? -2 : -1;
        }
    } else if (PyErr_Occurred()) {
        Py_DECREF(prefix);
        return -1;
    }
    if (sources->count == sources->capacity) {
        Py_ssize_t capacity = sources->capacity ? sources->capacity * 2 : 8;
        source_t *items = PyMem_Realloc(sources->items, (size_t)capacity * sizeof(source_t));
        if (items == NULL) {
            Py_DECREF(prefix);
            PyErr_NoMemory();
            return -1;
        }
        sources->items = items;
        sources->capacity = capacity;
    }
    sources->items[sources->count].prefix = prefix;
    sources->items[sources->count].last = last;
    return sources->count++;
}

/* A header (name, value) pair of a row: 1 if it is one (borrowed name and value set), 0
 * if the row's item is not a 2-sequence (give up). */
static inline int
header_pair(PyObject *item, PyObject **name, PyObject **value)
{
    if ((!PyTuple_CheckExact(item) && !PyList_CheckExact(item)) ||
        PySequence_Fast_GET_SIZE(item) < 2) {
        return 0;
    }
    *name = PySequence_Fast_GET_ITEM(item, 0);
    *value = PySequence_Fast_GET_ITEM(item, 1);
    return 1;
}

PyDoc_STRVAR(newer_marks_doc,
"newer_marks(headers, origins, read, applied, source_name, sequence_name)\n"
"--\n\n"
"headwater.processing._marks._newer_marks in one loop: return (keep, dropped), keep\n"
"None when nothing is dropped, and record each source's last mark in ``applied``; or\n"
"None, having changed nothing, for input to leave to the Python version.");

static PyObject *
newer_marks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "newer_marks takes 6 arguments");
        return NULL;
    }
    PyObject *headers = args[0], *origins = args[1], *applied = args[3];
    PyObject *source_name = args[4], *sequence_name = args[5];
    if (!PyList_CheckExact(headers) || !PyList_CheckExact(origins) ||
        !PyDict_CheckExact(applied)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t read = PyLong_AsSsize_t(args[2]);
    if (read == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(origins);
    Py_ssize_t rows = PyList_GET_SIZE(headers);
    char *dropped_at = PyMem_Calloc((size_t)(count ? count : 1), 1);
    if (dropped_at == NULL) {
        return PyErr_NoMemory();
    }
    sources_t sources = {NULL, 0, 0};
    Py_ssize_t dropped = 0;
    Py_ssize_t current = -1; /* the index in `sources` of the last record's source */
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t origin = PyLong_AsSsize_t(PyList_GET_ITEM(origins, i));
        if (origin == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (origin >= read) {
            continue; /* emitted by a step of this task: kept */
        }
        if (origin < 0 || origin >= rows) {
            goto give_up;
        }
        PyObject *found = PyList_GET_ITEM(headers, origin);
        if (!PyTuple_CheckExact(found) && !PyList_CheckExact(found)) {
            goto give_up;
        }
        Py_ssize_t size = PySequence_Fast_GET_SIZE(found);
        if (size == 0) {
            continue;
        }
        PyObject *name, *value;
        if (!header_pair(PySequence_Fast_GET_ITEM(found, 0), &name, &value)) {
            goto give_up;
        }
        int same = PyObject_RichCompareBool(name, source_name, Py_EQ);
        if (same < 0) {
            goto error;
        }
        if (!same || value == Py_None) {
            continue; /* not written by a runtime: kept */
        }
        if (!PyBytes_CheckExact(value)) {
            goto give_up;
        }
        const char *bytes = PyBytes_AS_STRING(value);
        Py_ssize_t length = PyBytes_GET_SIZE(value);
        const char *slash = memrchr(bytes, '/', (size_t)length);
        Py_ssize_t prefix_size = slash ? slash - bytes : 0;
        const char *digits = slash ? slash + 1 : bytes;
        mark_t mark = {0, 0};
        if (!parse_digits(digits, length - (digits - bytes), 18, &mark.hi)) {
            goto give_up;
        }
        if (size > 1) {
            PyObject *sequence, *number;
            if (!header_pair(PySequence_Fast_GET_ITEM(found, 1), &sequence, &number)) {
                goto give_up;
            }
            int is_sequence = PyObject_RichCompareBool(sequence, sequence_name, Py_EQ);
            if (is_sequence < 0) {
                goto error;
            }
            if (is_sequence && number != Py_None) {
                if (!PyBytes_CheckExact(number)) {
                    goto give_up;
                }
                Py_ssize_t number_size = PyBytes_GET_SIZE(number);
                if (number_size > 0 &&
                    (!parse_digits(PyBytes_AS_STRING(number), number_size, 9, &mark.lo))) {
                    goto give_up; /* 9 digits stay below 2**32: no carry into the offset */
                }
            }
        }
        if (current < 0 || PyBytes_GET_SIZE(sources.items[current].prefix) != prefix_size ||
            memcmp(PyBytes_AS_STRING(sources.items[current].prefix), bytes,
                   (size_t)prefix_size) != 0) {
            current = source_index(&sources, applied, bytes, prefix_size);
            if (current == -1) {
                goto error;
            }
            if (current == -2) {
                goto give_up;
            }
        }
        if (mark_above(mark, sources.items[current].last)) {
            sources.items[current].last = mark;
        } else {
            dropped_at[i] = 1;
            dropped++;
        }
    }
    for (Py_ssize_t s = 0; s < sources.count; s++) {
        PyObject *last = mark_to_object(sources.items[s].last);
        if (last == NULL) {
            goto error;
        }
        int failed = PyDict_SetItem(applied, sources.items[s].prefix, last);
        Py_DECREF(last);
        if (failed < 0) {
            goto error;
        }
    }
    PyObject *keep;
    if (dropped == 0) {
        keep = Py_NewRef(Py_None);
    } else {
        keep = PyList_New(count);
        if (keep == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            PyList_SET_ITEM(keep, i, Py_NewRef(dropped_at[i] ? Py_False : Py_True));
        }
    }
    result = Py_BuildValue("(Nn)", keep, dropped);
    goto done;
give_up:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    sources_clear(&sources);
    PyMem_Free(dropped_at);
    return result;
}

/* -- tumbling windows ------------------------------------------------------------------ */

PyDoc_STRVAR(tumbling_windows_doc,
"tumbling_windows(times, size, grace, first, rows)\n"
"--\n\n"
"headwater.processing._window_columns._tumbling_windows in one loop: return (kept,\n"
"starts, late), the rows of the records that are not late, their window starts, and the\n"
"rows of the late records, each row the item of the list `rows` at its index; or None\n"
"for input to leave to the Python version (a time that is not an int within 64 bits, or\n"
"a negative one; a size below 1; `rows` not a list of len(times)).");

static PyObject *
tumbling_windows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "tumbling_windows takes 5 arguments");
        return NULL;
    }
    PyObject *times = args[0], *rows = args[4];
    if (!PyList_CheckExact(times) || PyList_GET_SIZE(times) == 0 || !PyList_CheckExact(rows) ||
        PyList_GET_SIZE(rows) != PyList_GET_SIZE(times)) {
        Py_RETURN_NONE;
    }
    long long size, grace = 0, first = 0, close_after;
    int overflow = 0;
    size = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (!overflow) {
        grace = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    }
    if (!overflow) {
        first = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || size < 1 || grace < 0 || __builtin_add_overflow(size, grace, &close_after)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(times);
    /* First pass: each record's window start, and whether it is late (start < 0). */
    long long *starts = PyMem_Malloc(count * sizeof(long long));
    if (starts == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t late_count = 0;
    long long now = first;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(times, i);
        if (!PyLong_CheckExact(item)) {
            goto give_up;
        }
        long long t = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (t == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (overflow || t < 0) {
            goto give_up;
        }
        long long start = t - t % size, closes;
        if (t > now) {
            now = t;
        }
        if (__builtin_add_overflow(start, close_after, &closes)) {
            goto give_up;
        }
        if (closes <= now) {
            starts[i] = -1; /* late: starts are never negative otherwise */
            late_count++;
        } else {
            starts[i] = start;
        }
    }
    /* Second pass: the three lists, at their final sizes. */
    PyObject *kept = PyList_New(count - late_count);
    PyObject *kept_starts = PyList_New(count - late_count);
    PyObject *late = PyList_New(late_count);
    if (kept == NULL || kept_starts == NULL || late == NULL) {
        Py_XDECREF(kept);
        Py_XDECREF(kept_starts);
        Py_XDECREF(late);
        goto error;
    }
    Py_ssize_t k = 0, l = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        Py_INCREF(row);
        if (starts[i] < 0) {
            PyList_SET_ITEM(late, l++, row);
            continue;
        }
        PyObject *start = PyLong_FromLongLong(starts[i]);
        if (start == NULL) {
            Py_DECREF(row);
            Py_DECREF(kept);
            Py_DECREF(kept_starts);
            Py_DECREF(late);
            goto error;
        }
        PyList_SET_ITEM(kept, k, row);
        PyList_SET_ITEM(kept_starts, k++, start);
    }
    PyMem_Free(starts);
    return Py_BuildValue("(NNN)", kept, kept_starts, late);
give_up:
    PyMem_Free(starts);
    Py_RETURN_NONE;
error:
    PyMem_Free(starts);
    return NULL;
}

/* -- rows of columns ------------------------------------------------------------------- */

PyDoc_STRVAR(take_rows_doc,
"take_rows(columns, rows)\n"
"--\n\n"
"headwater.processing._columns._take_rows in one loop per column: return, for each list\n"
"of the tuple `columns`, a list of its items at `rows`; or None for input to leave to\n"
"the Python version (a column or `rows` that is not a list, an index that is not an int\n"
"from 0 to below the shortest column's length).");

static PyObject *
take_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take_rows takes 2 arguments");
        return NULL;
    }
    PyObject *columns = args[0], *rows = args[1];
    if (!PyTuple_CheckExact(columns) || !PyList_CheckExact(rows)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t width = PyTuple_GET_SIZE(columns), count = PyList_GET_SIZE(rows);
    Py_ssize_t shortest = PY_SSIZE_T_MAX;
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyTuple_GET_ITEM(columns, c);
        if (!PyList_CheckExact(column)) {
            Py_RETURN_NONE;
        }
        if (PyList_GET_SIZE(column) < shortest) {
            shortest = PyList_GET_SIZE(column);
        }
    }
    Py_ssize_t *at = PyMem_Malloc((count > 0 ? count : 1) * sizeof(Py_ssize_t));
    if (at == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(rows, i);
        Py_ssize_t index = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        if (index == -1 && PyErr_Occurred()) {
            PyErr_Clear(); /* past Py_ssize_t: the Python version says what is wrong */
        }
        if (index < 0 || index >= shortest) {
            PyMem_Free(at);
            Py_RETURN_NONE;
        }
        at[i] = index;
    }
    PyObject *result = PyList_New(width);
    if (result == NULL) {
        PyMem_Free(at);
        return NULL;
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyTuple_GET_ITEM(columns, c);
        PyObject *taken = PyList_New(count);
        if (taken == NULL) {
            PyMem_Free(at);
            Py_DECREF(result);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *item = PyList_GET_ITEM(column, at[i]);
            Py_INCREF(item);
            PyList_SET_ITEM(taken, i, item);
        }
        PyList_SET_ITEM(result, c, taken);
    }
    PyMem_Free(at);
    return result;
}

/* -- split_array -------------------------------------------------------------------- */

PyDoc_STRVAR(split_array_doc,
"split_array(text, /)\n"
"--\n\n"
"Return the text of each element of ``text``, a JSON array as orjson writes it (no\n"
"whitespace), as a list of bytes; or None if ``text`` is not bytes holding such an\n"
"array (its brackets, strings or nesting do not close), and the Python version says\n"
"what is wrong.");

/* The end of the string whose opening quote is just before `p`: the address of its
 * closing quote, or NULL if there is none before `end`. A quote closes the string when
 * an even number of backslashes stands before it (each pair is one escaped backslash). */
static inline const char *
string_end(const char *p, const char *end)
{
    const char *from = p;
    for (;;) {
        const char *quote = memchr(p, '"', (size_t)(end - p));
        if (quote == NULL) {
            return NULL;
        }
        const char *slash = quote;
        while (slash > from && slash[-1] == '\\') {
            slash--;
        }
        if (((quote - slash) & 1) == 0) {
            return quote;
        }
        p = quote + 1;
    }
}

static int
append_slice(PyObject *list, const char *start, const char *stop)
{
    PyObject *item = PyBytes_FromStringAndSize(start, stop - start);
    if (item == NULL) {
        return -1;
    }
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

static PyObject *
split_array(PyObject *module, PyObject *text)
{
    if (!PyBytes_CheckExact(text)) {
        Py_RETURN_NONE;
    }
    const char *data = PyBytes_AS_STRING(text);
    Py_ssize_t size = PyBytes_GET_SIZE(text);
    if (size < 2 || data[0] != '[' || data[size - 1] != ']') {
        Py_RETURN_NONE;
    }
    PyObject *elements = PyList_New(0);
    if (elements == NULL || size == 2) {
        return elements;
    }
    const char *p = data + 1, *end = data + size - 1, *start = p;
    Py_ssize_t depth = 0;
    while (p < end) {
        switch (*p) {
        case '"':
            p = string_end(p + 1, end);
            if (p == NULL) {
                goto malformed;
            }
            break;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth < 0) {
                goto malformed;
            }
            break;
        case ',':
            if (depth == 0) {
                if (p == start || append_slice(elements, start, p) < 0) {
                    goto failed;
                }
                start = p + 1;
            }
            break;
        default:
            break;
        }
        p++;
    }
    if (depth != 0 || start == end || append_slice(elements, start, end) < 0) {
        goto failed;
    }
    return elements;

failed:
    if (PyErr_Occurred()) {
        Py_DECREF(elements);
        return NULL;
    }
malformed:
    Py_DECREF(elements);
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"newer_marks", (PyCFunction)(void (*)(void))newer_marks, METH_FASTCALL, newer_marks_doc},
    {"tumbling_windows", (PyCFunction)(void (*)(void))tumbling_windows, METH_FASTCALL,
     tumbling_windows_doc},
    {"take_rows", (PyCFunction)(void (*)(void))take_rows, METH_FASTCALL, take_rows_doc},
    {"split_array", (PyCFunction)split_array, METH_O, split_array_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "headwater.processing._speedups",
    .m_doc = "The processing runtime's hot loops in C (optional; see "
             "headwater.processing._marks).",
    .m_size = 0,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
