/* Minimal Cortex-M startup for the QEMU MPS2 boards (tests and benchmarks of generated code):
 * a 16-entry vector table, a reset handler that enables the FPU, copies .data, clears .bss,
 * opens semihosting and calls main(). Not needed by the generated library itself. */
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void exit(int);

void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((section(".isr_vector"), used)) void *const tfc_vectors[16] = {
    (void *)&__stack_top, (void *)Reset_Handler, (void *)Fault_Handler, (void *)Fault_Handler,
    (void *)Fault_Handler, (void *)Fault_Handler, (void *)Fault_Handler, 0, 0, 0, 0,
    (void *)Default_Handler, (void *)Default_Handler, 0, (void *)Default_Handler,
    (void *)SysTick_Handler};

void Default_Handler(void) {}

void Fault_Handler(void) { exit(99); }

void Reset_Handler(void) {
  uint32_t *src = &__data_load, *dst = &__data_start;
  volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
  *cpacr |= 0xFu << 20; /* CP10, CP11 full access: enable the FPU */
  __asm volatile("dsb\n isb");
  while (dst < &__data_end) *dst++ = *src++;
  for (dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  initialise_monitor_handles();
  exit(main());
}
