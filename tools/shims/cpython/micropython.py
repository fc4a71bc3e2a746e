# CPython stand-in for MicroPython's built-in `micropython` module. Only on the
# CPython path (the unix port and the boards have the real one built in).


def const(value):
    # On a board const() folds the value into the bytecode; on CPython it is
    # the identity, which is all the firmware relies on.
    return value


def opt_level(level=None):
    return 0 if level is None else None


def mem_info(verbose=None):
    print("mem: CPython (no MicroPython heap)")


def qstr_info(verbose=None):
    print("qstr: CPython (no qstr pool)")


def stack_use():
    return 0


def heap_lock():
    return 0


def heap_unlock():
    return 0


def kbd_intr(chr):
    pass


def alloc_emergency_exception_buf(size):
    pass


def schedule(func, arg):
    # A board runs it soon from the VM loop; calling it now keeps host tests simple.
    func(arg)
    return True


def native(func):
    return func


def viper(func):
    return func
